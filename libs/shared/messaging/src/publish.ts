import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { toKafkaRecord, type AnyEvent } from '@vivier/contracts';
import { traceHeaders } from '@vivier/service-kit';
import type { messagingTables } from './tables';

type OutboxTable = ReturnType<typeof messagingTables>['outbox'];

/** A drizzle database or transaction of any schema. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Executor = PgDatabase<PgQueryResultHKT, any, any>;

export interface OutboxRecord {
  eventId: string;
  topic: string;
  key: string;
  envelope: AnyEvent;
  headers: Record<string, string>;
}

/**
 * The outbox rows of events: the record (topic, key, headers) derived once, and the caller's trace
 * context (the request or record being handled) stamped on events that carry none, so consumers
 * continue the trace. For services that write the outbox in their own SQL statement too.
 */
export function outboxRecords(events: AnyEvent[]): OutboxRecord[] {
  const trace = traceHeaders();
  return events.map((given) => {
    const event = given.traceparent === undefined && trace.traceparent !== undefined ? { ...given, ...trace } : given;
    const record = toKafkaRecord(event);
    return { eventId: event.id, topic: record.topic, key: record.key, envelope: event, headers: record.headers };
  });
}

/**
 * Returns `publish(tx, event)`: writes events to the service's outbox inside the caller's
 * transaction, so they exist exactly when the state they describe does. The relay sends them.
 * Events are validated against their contract when they are created (createEvent).
 */
export function createPublisher(outbox: OutboxTable) {
  return async function publish(tx: Executor, events: AnyEvent | AnyEvent[]): Promise<void> {
    const list = Array.isArray(events) ? events : [events];
    if (list.length === 0) return;
    await tx.insert(outbox).values(outboxRecords(list));
  };
}

export type Publish = ReturnType<typeof createPublisher>;
