import type { Database } from '@vivier/service-kit';
import type { chatTables } from '@vivier/db-chat';

/** The chat service's drizzle database (its own schema only). */
export type ChatDatabase = Database<typeof chatTables>;
