import { fileURLToPath } from 'node:url';

export * as chatTables from './schema';

/** The PostgreSQL schema name, also the migration journal's home. */
export const CHAT_SCHEMA = 'chat';

/** drizzle-kit output folder, applied by `runMigrations` from @vivier/service-kit. */
export const chatMigrationsFolder = fileURLToPath(new URL('../migrations', import.meta.url));
