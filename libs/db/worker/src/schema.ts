import { pgSchema } from 'drizzle-orm/pg-core';
import { messagingTables } from '@vivier/messaging';

/** Everything the worker service stores lives in this PostgreSQL schema, owned by the worker_svc role. */
export const workerSchema = pgSchema('worker');

export const { outbox, processedEvents } = messagingTables(workerSchema);
