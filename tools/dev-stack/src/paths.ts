import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const ROOT = path.resolve(fileURLToPath(new URL('../../..', import.meta.url)));
export const DATA_DIR = path.join(ROOT, '.data');

export const SERVICES = ['auth', 'chat', 'admin', 'worker'] as const;
export type BackendService = (typeof SERVICES)[number];
export const ALL_SERVICES = ['auth', 'chat', 'admin', 'worker', 'gateway'] as const;
export type Service = (typeof ALL_SERVICES)[number];

export function migrationsFolder(service: BackendService): string {
  return path.join(ROOT, 'libs', 'db', service, 'migrations');
}

export function serviceMain(service: Service): string {
  return path.join(ROOT, 'apps', service, 'src', 'main.ts');
}
