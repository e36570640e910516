import { pgSchema } from 'drizzle-orm/pg-core';
import { messagingTables } from '@vivier/messaging';

/** Everything the auth service stores lives in this PostgreSQL schema, owned by the auth_svc role. */
export const authSchema = pgSchema('auth');

export const { outbox, processedEvents } = messagingTables(authSchema);
