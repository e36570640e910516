import { fileURLToPath } from 'node:url';

export * as workerTables from './schema';

/** The PostgreSQL schema name, also the migration journal's home. */
export const WORKER_SCHEMA = 'worker';

/** drizzle-kit output folder, applied by `runMigrations` from @vivier/service-kit. */
export const workerMigrationsFolder = fileURLToPath(new URL('../migrations', import.meta.url));
