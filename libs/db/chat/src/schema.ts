import { sql } from 'drizzle-orm';
import { bigint, boolean, check, date, index, integer, pgSchema, primaryKey, text, timestamp, uuid } from 'drizzle-orm/pg-core';
import { messagingTables } from '@vivier/messaging';
import { providerSettingsTable } from '@vivier/providers/store';

/** Everything the chat service stores lives in this PostgreSQL schema, owned by the chat_svc role. */
export const chatSchema = pgSchema('chat');

export const { outbox, processedEvents } = messagingTables(chatSchema);

/**
 * Conversations. Ids are UUIDv7 (time-ordered): a newest-first page is `order by id desc`, and
 * `created_at` is the id's own timestamp. `model` is what the chat's replies use unless a message
 * asks for another one (an id or an alias, resolved per reply).
 */
export const chats = chatSchema.table(
  'chats',
  {
    id: uuid('id').primaryKey(),
    userId: uuid('user_id').notNull(),
    title: text('title'),
    model: text('model').notNull(),
    systemPrompt: text('system_prompt'),
    archived: boolean('archived').notNull().default(false),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull(),
  },
  (t) => [index('chats_user_archived_id_idx').on(t.userId, t.archived, t.id)],
);

/**
 * A chat's summary of its older messages (written by the worker, `worker.summary.generated`): the
 * conversation up to and including message `through_id`, which replies are given in place of
 * those messages once the model's window no longer holds them. `tokens` is what the summary
 * takes in a context, counted once when it is stored. One row per chat, gone with the chat.
 */
export const chatSummaries = chatSchema.table('chat_summaries', {
  chatId: uuid('chat_id')
    .primaryKey()
    .references(() => chats.id, { onDelete: 'cascade' }),
  userId: uuid('user_id').notNull(),
  summary: text('summary').notNull(),
  tokens: integer('tokens').notNull(),
  throughId: uuid('through_id').notNull(),
  throughAt: timestamp('through_at', { withTimezone: true }).notNull(),
  model: text('model').notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull(),
});

/**
 * Uploaded files (the bytes are in S3 under `objectKey`). Text files keep their text here too, so
 * building a model context never has to go to S3 for them.
 */
export const files = chatSchema.table(
  'files',
  {
    id: uuid('id').primaryKey(),
    userId: uuid('user_id').notNull(),
    name: text('name').notNull(),
    contentType: text('content_type').notNull(),
    sizeBytes: integer('size_bytes').notNull(),
    objectKey: text('object_key').notNull(),
    textContent: text('text_content'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
  },
  (t) => [index('files_user_id_idx').on(t.userId, t.id)],
);

/** Monthly token quotas from `admin.events` `quota.set` (null: unlimited). */
export const quotas = chatSchema.table('quotas', {
  userId: uuid('user_id').primaryKey(),
  monthlyTokens: bigint('monthly_tokens', { mode: 'number' }),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

/**
 * Tokens of one user in one calendar month (UTC): `reserved` by replies in flight (their prompt
 * plus their maximum output), `used` by finished ones. A send reserves with one conditional
 * upsert (`used + reserved + n <= quota`), the end of the reply moves its reservation to `used`.
 */
export const quotaUsage = chatSchema.table(
  'quota_usage',
  {
    userId: uuid('user_id').notNull(),
    month: date('month', { mode: 'string' }).notNull(),
    reserved: bigint('reserved', { mode: 'number' }).notNull().default(0),
    used: bigint('used', { mode: 'number' }).notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.userId, t.month] }), check('quota_usage_reserved_check', sql`${t.reserved} >= 0`)],
);

/**
 * Chat instances that hold quota reservations of the OpenAI-compatible API (its requests in flight
 * and its leases live in the instance's memory). Each pushes its `expires_at` ahead while it runs
 * (by its own CHAT_QUOTA_HOLDER_TIMEOUT_MS); the holds of one whose row expired (killed, or cut off
 * from the database) are given back by the others.
 */
export const quotaHolders = chatSchema.table('quota_holders', {
  holder: uuid('holder').primaryKey(),
  expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
});

/**
 * The part of `quota_usage.reserved` each holder holds, written in the same statements: a
 * reservation adds to it, a settlement takes back at most what it still holds. A row is only
 * touched by a statement that has locked the (user, month) row of `quota_usage` first.
 */
export const quotaHolds = chatSchema.table(
  'quota_holds',
  {
    holder: uuid('holder').notNull(),
    userId: uuid('user_id').notNull(),
    month: date('month', { mode: 'string' }).notNull(),
    tokens: bigint('tokens', { mode: 'number' }).notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.holder, t.userId, t.month] }), check('quota_holds_tokens_check', sql`${t.tokens} >= 0`)],
);

/**
 * Data exports a user asked for (`POST /api/v1/exports`). Chat writes `export.requested` with
 * the row; the worker builds the bundle and answers with `export.ready` (the object's key, size
 * and deletion time) or `export.failed`. Download URLs are presigned on each read, never stored.
 */
export const dataExports = chatSchema.table(
  'exports',
  {
    id: uuid('id').primaryKey(),
    userId: uuid('user_id').notNull(),
    status: text('status', { enum: ['pending', 'ready', 'failed'] }).notNull(),
    objectKey: text('object_key'),
    sizeBytes: bigint('size_bytes', { mode: 'number' }),
    expiresAt: timestamp('expires_at', { withTimezone: true }),
    failureReason: text('failure_reason'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull(),
  },
  (t) => [
    index('exports_user_id_idx').on(t.userId, t.id),
    check('exports_status_check', sql`${t.status} in ('pending', 'ready', 'failed')`),
  ],
);

/** Provider settings from the admin API (`provider.configured`), applied by every chat instance. */
export const providerSettings = providerSettingsTable(chatSchema);
