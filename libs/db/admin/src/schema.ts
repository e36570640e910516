import { pgSchema } from 'drizzle-orm/pg-core';
import { messagingTables } from '@vivier/messaging';

/** Everything the admin service stores lives in this PostgreSQL schema, owned by the admin_svc role. */
export const adminSchema = pgSchema('admin');

export const { outbox, processedEvents } = messagingTables(adminSchema);
