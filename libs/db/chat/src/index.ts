import { fileURLToPath } from 'node:url';
import * as schema from './schema';
import { messages } from './messages';

export type { MessageRole, MessageStatus, ReplyParams } from './messages';

/** Every chat table: the drizzle-kit managed ones (schema.ts) and the partitioned `messages`. */
export const chatTables = { ...schema, messages };

/** The PostgreSQL schema name, also the migration journal's home. */
export const CHAT_SCHEMA = 'chat';

/** drizzle-kit output folder, applied by `runMigrations` from @vivier/service-kit. */
export const chatMigrationsFolder = fileURLToPath(new URL('../migrations', import.meta.url));
