import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(fileURLToPath(new URL('../../..', import.meta.url)));

/** The five apps, each an image, a compose service and a Kubernetes Deployment. */
export const APPS = ['gateway', 'auth', 'chat', 'admin', 'worker'] as const;
export type App = (typeof APPS)[number];

/** The apps that own a PostgreSQL schema (and run migrations). */
export const SERVICES_WITH_DATABASE = ['auth', 'chat', 'admin', 'worker'] as const;

export const fromRoot = (...parts: string[]) => path.join(ROOT, ...parts);
