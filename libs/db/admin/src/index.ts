import { fileURLToPath } from 'node:url';

export * as adminTables from './schema';
export { LATENCY_BUCKETS_MS, LATENCY_BUCKET_COUNT, latencyBucketColumn, type ProviderRouting } from './schema';

/** The PostgreSQL schema name, also the migration journal's home. */
export const ADMIN_SCHEMA = 'admin';

/** drizzle-kit output folder, applied by `runMigrations` from @vivier/service-kit. */
export const adminMigrationsFolder = fileURLToPath(new URL('../migrations', import.meta.url));
