import { bigserial, index, integer, jsonb, pgSchema, text, timestamp, uuid } from 'drizzle-orm/pg-core';
import { messagingTables } from '@vivier/messaging';
import { providerSettingsTable } from '@vivier/providers/store';

/** Everything the worker service stores lives in this PostgreSQL schema, owned by the worker_svc role. */
export const workerSchema = pgSchema('worker');

export const { outbox, processedEvents } = messagingTables(workerSchema);

const createdAt = () => timestamp('created_at', { withTimezone: true }).notNull().defaultNow();
const updatedAt = () => timestamp('updated_at', { withTimezone: true }).notNull().defaultNow();

/**
 * One row per async completion (`jobs.completion`), keyed by the assistant message it completes.
 * `started` is committed before the provider is called; the result is committed as soon as the
 * provider answers (`finished`), and `published_at` is set in the transaction that writes
 * `completion.finished` to the outbox: a redelivered job never calls the provider again once it
 * has an answer, and never publishes twice. `lease_until` (renewed while the provider answers)
 * keeps a second instance off a job another one is working on; a crashed instance's runs out.
 */
export const jobs = workerSchema.table(
  'jobs',
  {
    assistantMessageId: uuid('assistant_message_id').primaryKey(),
    chatId: uuid('chat_id').notNull(),
    userId: uuid('user_id').notNull(),
    state: text('state', { enum: ['started', 'finished'] }).notNull(),
    attempts: integer('attempts').notNull().default(0),
    leaseUntil: timestamp('lease_until', { withTimezone: true }).notNull(),
    /** The `completion.finished` payload once the job has an outcome. */
    result: jsonb('result').$type<Record<string, unknown>>(),
    lastError: text('last_error'),
    publishedAt: timestamp('published_at', { withTimezone: true }),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [index('jobs_updated_at_idx').on(t.updatedAt)],
);

/**
 * What the worker knows about a chat for its title: the model and the first user message (from
 * chat.events), and whether it has a title (given by the user or generated). `title_generated_at`
 * is set in the transaction that publishes `title.generated`, so a title is generated once.
 */
export const chatTitles = workerSchema.table('chat_titles', {
  chatId: uuid('chat_id').primaryKey(),
  userId: uuid('user_id').notNull(),
  model: text('model'),
  firstMessage: text('first_message'),
  /** The user titled the chat (at creation or by renaming): nothing to generate. */
  titledByUser: timestamp('titled_by_user', { withTimezone: true }),
  title: text('title'),
  titleGeneratedAt: timestamp('title_generated_at', { withTimezone: true }),
  /** A completed reply came before the first message (its event was retried): the title follows the message. */
  replyCompletedAt: timestamp('reply_completed_at', { withTimezone: true }),
  deletedAt: timestamp('deleted_at', { withTimezone: true }),
  createdAt: createdAt(),
  updatedAt: updatedAt(),
});

/**
 * The newest summary the worker wrote of each chat (`chat.context.truncated`), through message
 * `through_id`. Chat stores the summary it is sent; this copy lets the next job of the chat build
 * on it before chat has applied it. A deleted chat (`chat.deleted`) keeps only `deleted_at`: the
 * summary holds the user's words, and a job of the chat still running (a retry) must not write
 * one back.
 */
export const chatSummaries = workerSchema.table('chat_summaries', {
  chatId: uuid('chat_id').primaryKey(),
  userId: uuid('user_id').notNull(),
  summary: text('summary'),
  throughId: uuid('through_id'),
  throughAt: timestamp('through_at', { withTimezone: true }),
  deletedAt: timestamp('deleted_at', { withTimezone: true }),
  createdAt: createdAt(),
  updatedAt: updatedAt(),
});

/** Data exports (`jobs.export`): one S3 object and one outcome event per export id. */
export const exports = workerSchema.table(
  'exports',
  {
    exportId: uuid('export_id').primaryKey(),
    userId: uuid('user_id').notNull(),
    state: text('state', { enum: ['started', 'ready', 'failed', 'expired'] }).notNull(),
    objectKey: text('object_key'),
    sizeBytes: integer('size_bytes'),
    expiresAt: timestamp('expires_at', { withTimezone: true }),
    reason: text('reason'),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [index('exports_expires_at_idx').on(t.expiresAt)],
);

/**
 * Scheduled maintenance jobs. An instance runs a job only while holding its row
 * (`FOR UPDATE SKIP LOCKED`) and only when `next_run_at` has passed, then moves `next_run_at`
 * on: however many instances run, a job runs once per interval.
 */
export const schedules = workerSchema.table('schedules', {
  name: text('name').primaryKey(),
  intervalMs: integer('interval_ms').notNull(),
  nextRunAt: timestamp('next_run_at', { withTimezone: true }).notNull(),
  /** The lease of the run under way (null when none): a new interval never shortens it. */
  claimedUntil: timestamp('claimed_until', { withTimezone: true }),
  lastRunAt: timestamp('last_run_at', { withTimezone: true }),
  lastRunBy: text('last_run_by'),
  lastResult: jsonb('last_result').$type<Record<string, unknown>>(),
  runs: integer('runs').notNull().default(0),
});

/** A log of maintenance runs (which instance, when, what it did), purged with the outbox. */
export const scheduleRuns = workerSchema.table(
  'schedule_runs',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    name: text('name').notNull(),
    instance: text('instance').notNull(),
    startedAt: timestamp('started_at', { withTimezone: true }).notNull(),
    finishedAt: timestamp('finished_at', { withTimezone: true }).notNull().defaultNow(),
    result: jsonb('result').$type<Record<string, unknown>>(),
  },
  (t) => [index('schedule_runs_name_started_idx').on(t.name, t.startedAt)],
);

/** Provider settings from the admin API (`provider.configured`), for the jobs' provider calls. */
export const providerSettings = providerSettingsTable(workerSchema);
