import { sql } from 'drizzle-orm';
import { boolean, customType, integer, jsonb, text, timestamp, uuid } from 'drizzle-orm/pg-core';
import { chatSchema } from './schema';

/** PostgreSQL's full-text document type (read-only here: a generated column). */
const tsvector = customType<{ data: string }>({ dataType: () => 'tsvector' });

export type MessageRole = 'user' | 'assistant';
/** `streaming` and `queued` are in flight; the other three are final. */
export type MessageStatus = 'completed' | 'streaming' | 'queued' | 'cancelled' | 'failed';

/** Request parameters a reply was asked with, kept so an async job or a regenerate can reuse them. */
export interface ReplyParams {
  temperature?: number;
  maxTokens?: number;
}

/**
 * Messages, PARTITIONED BY RANGE (created_at), one partition per calendar month (UTC).
 *
 * drizzle-kit cannot write a partitioned table, so this table is deliberately NOT in schema.ts
 * (the file drizzle-kit diffs): its DDL is hand-written in the custom migration
 * `0003_messages_partitioned.sql` (table, partitions, `ensure_message_partitions`, the tsvector
 * column and its GIN index). This definition only types queries: change both together, with a new
 * custom migration (`drizzle-kit generate --custom --name <what>`).
 *
 * Ids are UUIDv7 and `created_at` is exactly the id's millisecond timestamp, so a lookup by id
 * also knows its partition. The primary key is (id, created_at) because a partitioned table's
 * keys must contain the partition column.
 */
export const messages = chatSchema.table('messages', {
  id: uuid('id').notNull(),
  chatId: uuid('chat_id').notNull(),
  /** The chat's owner (denormalised: search and quotas are per user). */
  userId: uuid('user_id').notNull(),
  role: text('role').$type<MessageRole>().notNull(),
  content: text('content').notNull().default(''),
  status: text('status').$type<MessageStatus>().notNull(),
  /** Assistant messages: the user message they answer. */
  replyTo: uuid('reply_to'),
  /** User messages: the model asked for; assistant messages: `<provider>/<model>` that answered. */
  model: text('model'),
  provider: text('provider'),
  promptTokens: integer('prompt_tokens'),
  completionTokens: integer('completion_tokens'),
  /** Tokens this message takes in a model context (content and text attachments). */
  contextTokens: integer('context_tokens').notNull().default(0),
  latencyMs: integer('latency_ms'),
  timeToFirstTokenMs: integer('time_to_first_token_ms'),
  cached: boolean('cached').notNull().default(false),
  errorCode: text('error_code'),
  errorDetail: text('error_detail'),
  attachments: uuid('attachments').array().notNull().default(sql`'{}'::uuid[]`),
  /**
   * Replay map of a finished reply: the content length (UTF-16 units) at the end of each `delta`
   * event of its stream, so a client resuming from any event id gets exactly the text after it.
   */
  deltaEnds: integer('delta_ends').array(),
  /** Tokens reserved against the monthly quota while the reply runs; 0 once settled. */
  quotaReserved: integer('quota_reserved').notNull().default(0),
  params: jsonb('params').$type<ReplyParams>(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
  completedAt: timestamp('completed_at', { withTimezone: true }),
  search: tsvector('search'),
});
