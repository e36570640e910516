import { pgSchema } from 'drizzle-orm/pg-core';
import { messagingTables } from '@vivier/messaging';

/** Everything the chat service stores lives in this PostgreSQL schema, owned by the chat_svc role. */
export const chatSchema = pgSchema('chat');

export const { outbox, processedEvents } = messagingTables(chatSchema);
