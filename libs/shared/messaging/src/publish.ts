import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { toKafkaRecord, type AnyEvent } from '@vivier/contracts';
import type { messagingTables } from './tables';

type OutboxTable = ReturnType<typeof messagingTables>['outbox'];

/** A drizzle database or transaction of any schema. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Executor = PgDatabase<PgQueryResultHKT, any, any>;

/**
 * Returns `publish(tx, event)`: writes events to the service's outbox inside the caller's
 * transaction, so they exist exactly when the state they describe does. The relay sends them.
 * Events are validated against their contract when they are created (createEvent) and the
 * record (topic, key, headers) is derived here once.
 */
export function createPublisher(outbox: OutboxTable) {
  return async function publish(tx: Executor, events: AnyEvent | AnyEvent[]): Promise<void> {
    const list = Array.isArray(events) ? events : [events];
    if (list.length === 0) return;
    await tx.insert(outbox).values(
      list.map((event) => {
        const record = toKafkaRecord(event);
        return { eventId: event.id, topic: record.topic, key: record.key, envelope: event, headers: record.headers };
      }),
    );
  };
}

export type Publish = ReturnType<typeof createPublisher>;
