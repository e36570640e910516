import { bigserial, customType, index, jsonb, primaryKey, text, timestamp, uuid, type PgSchema } from 'drizzle-orm/pg-core';
import { sql } from 'drizzle-orm';

/** PostgreSQL's 64-bit transaction id, as text. */
const xid8 = customType<{ data: string; driverData: string }>({ dataType: () => 'xid8' });

/**
 * The two tables every event-producing or -consuming service has in its own schema:
 * - `outbox`: events written in the same transaction as the state they describe, published later
 *   by the relay in `id` order (which keeps per-key order);
 * - `processed_events`: event ids a consumer group has applied, written in the same transaction
 *   as the effect, so a redelivered event changes nothing.
 */
export function messagingTables(schema: PgSchema) {
  const outbox = schema.table(
    'outbox',
    {
      id: bigserial('id', { mode: 'number' }).primaryKey(),
      eventId: uuid('event_id').notNull().unique(),
      topic: text('topic').notNull(),
      key: text('key').notNull(),
      /** The whole CloudEvents envelope (structured mode). */
      envelope: jsonb('envelope').notNull(),
      headers: jsonb('headers').$type<Record<string, string>>().notNull().default({}),
      /**
       * The writing transaction. The relay publishes a row only once every transaction that
       * started before it has ended, so a row committed late can never be overtaken by a
       * row with a higher id of the same key.
       */
      txid: xid8('txid').notNull().default(sql`pg_current_xact_id()`),
      createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
      publishedAt: timestamp('published_at', { withTimezone: true }),
    },
    (t) => [
      index('outbox_unpublished_idx').on(t.id).where(sql`${t.publishedAt} is null`),
      // Where the relay starts looking: every row of a transaction older than its last complete
      // pass is published, so it reads from that transaction id on. Walking the id index from its
      // start would also walk the entries of every row published since the last vacuum.
      index('outbox_pending_txid_idx').on(t.txid).where(sql`${t.publishedAt} is null`),
    ],
  );
  const processedEvents = schema.table(
    'processed_events',
    {
      consumerGroup: text('consumer_group').notNull(),
      eventId: uuid('event_id').notNull(),
      topic: text('topic').notNull(),
      processedAt: timestamp('processed_at', { withTimezone: true }).notNull().defaultNow(),
    },
    (t) => [primaryKey({ columns: [t.consumerGroup, t.eventId] }), index('processed_events_processed_at_idx').on(t.processedAt)],
  );
  return { outbox, processedEvents };
}
