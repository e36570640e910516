import { fileURLToPath } from 'node:url';

export * as authTables from './schema';

/** The PostgreSQL schema name, also the migration journal's home. */
export const AUTH_SCHEMA = 'auth';

/** drizzle-kit output folder, applied by `runMigrations` from @vivier/service-kit. */
export const authMigrationsFolder = fileURLToPath(new URL('../migrations', import.meta.url));
