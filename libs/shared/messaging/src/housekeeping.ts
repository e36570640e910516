import type pg from 'pg';
import { Env } from '@vivier/service-kit';
import type { TProperties } from '@sinclair/typebox';

export const housekeepingConfigProperties = {
  HOUSEKEEPING_INTERVAL_MS: Env.int(3_600_000, "How often a service's relay leader runs its schema's housekeeping (purges).", 100),
  OUTBOX_RETENTION_HOURS: Env.int(168, 'Published outbox rows older than this are purged.', 1),
  PROCESSED_EVENTS_RETENTION_HOURS: Env.int(
    720,
    'Processed event ids older than this are purged; keep it longer than any redelivery can come late (retries, replays).',
    1,
  ),
} satisfies TProperties;

/**
 * One housekeeping step on the service's own schema; returns what it removed, for the log.
 * `stopping` aborts when the relay stops: a long step ends after the batch in hand.
 */
export interface HousekeepingTask {
  name: string;
  run(client: pg.ClientBase, stopping: AbortSignal): Promise<Record<string, number>>;
}

const BATCH = 5000;

/**
 * Deletes in batches (short transactions, no long lock on a busy table) until none is left, or
 * until stopped. `statement` takes `params` and then the batch size.
 */
export async function deleteInBatches(client: pg.ClientBase, statement: string, params: unknown[], stopping?: AbortSignal): Promise<number> {
  let total = 0;
  while (!stopping?.aborted) {
    const { rowCount } = await client.query(statement, [...params, BATCH]);
    total += rowCount ?? 0;
    if ((rowCount ?? 0) < BATCH) return total;
  }
  return total;
}

/**
 * The messaging tables' own upkeep, for every service: published outbox rows and processed event
 * ids past their retention. Unpublished rows are never touched.
 */
export function messagingHousekeeping(schema: string, retention: { outboxHours: number; processedEventsHours: number }): HousekeepingTask[] {
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`unsafe schema name ${schema}`);
  return [
    {
      name: 'purge-outbox',
      run: async (client, stopping) => ({
        outbox: await deleteInBatches(
          client,
          `delete from "${schema}".outbox where id in (
             select id from "${schema}".outbox
             where published_at is not null and published_at < now() - make_interval(hours => $1) limit $2)`,
          [retention.outboxHours],
          stopping,
        ),
      }),
    },
    {
      name: 'purge-processed-events',
      run: async (client, stopping) => ({
        processedEvents: await deleteInBatches(
          client,
          `delete from "${schema}".processed_events where (consumer_group, event_id) in (
             select consumer_group, event_id from "${schema}".processed_events
             where processed_at < now() - make_interval(hours => $1) limit $2)`,
          [retention.processedEventsHours],
          stopping,
        ),
      }),
    },
  ];
}
