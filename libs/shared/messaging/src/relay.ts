import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { FastifyBaseLogger } from 'fastify';
import { KAFKA_HEADERS } from '@vivier/contracts';
import { contextFromHeaders, endSpan, serviceTracer, SpanKind, startChildSpan, traceHeaders, tracingEnabled, TRACER_KEY, type TraceSpan } from '@vivier/service-kit';
import type { MessagingMetrics } from './metrics';
import type { EventProducer } from './producer';
import type { HousekeepingTask } from './housekeeping';

/** See OutboxRelayOptions.maxBatchBytes. */
const DEFAULT_MAX_BATCH_BYTES = 512 * 1024;

/** The first wait before looking again at rows held back by an open transaction, and the longest. */
const HELD_BACK_MIN_MS = 10;
const HELD_BACK_MAX_MS = 100;

export interface OutboxRelayOptions {
  pool: pg.Pool;
  /** The service's schema; its outbox table is `<schema>.outbox`. */
  schema: string;
  producer: EventProducer;
  logger: FastifyBaseLogger;
  metrics?: MessagingMetrics;
  batchSize?: number;
  /** Safety poll; NOTIFY from the outbox trigger normally wakes the relay at once. */
  pollIntervalMs?: number;
  /**
   * After a pass that published less than a full batch, wait this long before the next one
   * (Kafka's `linger.ms`, 5 ms by default since Kafka 4.0): under a steady stream, records go out
   * in fewer, larger requests, which consumers then fetch in fewer round trips. An event arriving
   * after a quiet spell is not delayed: the wait follows a pass, it never precedes one.
   */
  lingerMs?: number;
  /**
   * The most bytes of events one send carries (default 512 KiB; a larger event goes alone). A
   * broker refuses a record batch over its `message.max.bytes` (1 MiB by default) and the refusal
   * is not retriable: without a cap, a few large events read together (a long message, a whole
   * context) would be refused on every pass and hold back every event behind them.
   */
  maxBatchBytes?: number;
  maxBackoffMs?: number;
  /**
   * Upkeep of the service's schema, run by the leader (so once per schema however many replicas
   * run) every `intervalMs`, first soon after it takes the lead.
   */
  housekeeping?: { intervalMs: number; tasks: HousekeepingTask[] };
}

interface OutboxRow {
  id: string;
  topic: string;
  key: string;
  envelope: unknown;
  headers: Record<string, string>;
}

const LEADER_RETRY_MS = 2000;

/**
 * Publishes outbox rows to Kafka in id order and marks them sent.
 *
 * - One relay per schema is active at a time: it holds a session advisory lock on a dedicated
 *   connection; replicas wait and take over when that connection goes away.
 * - A row is published only once every transaction older than it has ended
 *   (txid < pg_snapshot_xmin), so a transaction that committed late cannot be overtaken by a
 *   newer row of the same key: per-key order on Kafka equals commit-safe id order.
 * - With Kafka away, sends fail and are retried with backoff; rows stay until they are sent.
 * - Rows sent are marked by the statement of the next pass (which follows after the linger, or
 *   after the backoff if it fails), or when the leader lets go; not by a statement of their own:
 *   a steady stream costs one round trip and one commit per pass instead of two. A crash between
 *   send and mark re-sends those rows: consumers dedupe by event id.
 */
export class OutboxRelay {
  private running = false;
  /** Aborted by stop(): ends a linger at once (the rows it sent are marked on the way out). */
  private stopping = new AbortController();
  private loop: Promise<void> | undefined;
  /** Counts start() calls: a loop runs while it is the latest, so a stop() that start() overtook still ends its loop. */
  private generation = 0;
  /** The last stop(): a loop started after it waits until it has let go of the connection. */
  private stopped: Promise<void> = Promise.resolve();
  private client: pg.PoolClient | undefined;
  /** Ends the current sleep; undefined while the relay is not sleeping. */
  private wake: (() => void) | undefined;
  /** A NOTIFY (or poke) came while the relay was not sleeping: its next sleep returns at once. */
  private woken = false;
  private backlogValue = 0;
  /**
   * Every outbox row of a transaction below this id is published (the xmin of the last pass that
   * saw fewer rows than a batch). Passes read from here, through outbox_pending_txid_idx, instead
   * of walking the id index past the entries of rows published since the last vacuum. A new
   * leader starts from 0.
   */
  private floor = '0';
  /** Ids of rows sent to Kafka and not marked yet: the next pass's statement marks them. */
  private unmarked: string[] = [];
  private lastErrorValue: string | undefined;
  private leader = false;
  private nextHousekeeping = 0;
  /** The round of housekeeping under way (see startHousekeeping); stop() waits for it. */
  private housekeeping: Promise<void> | undefined;
  /** Aborted when this relay lets go of the lead: its housekeeping ends, the next leader's begins. */
  private leadership = new AbortController();
  private readonly channel: string;
  private readonly table: string;
  private readonly lockKey: string;
  /** Marks sent rows (`$1`, ids) outside a pass: when the leader lets go. */
  private readonly markStatement: string;

  constructor(private readonly options: OutboxRelayOptions) {
    if (!/^[a-z_][a-z0-9_]*$/.test(options.schema)) throw new Error(`unsafe schema name ${options.schema}`);
    this.channel = `vivier_outbox_${options.schema}`;
    this.table = `"${options.schema}"."outbox"`;
    this.lockKey = `vivier-outbox-relay:${options.schema}`;
    this.markStatement = `update ${this.table} set published_at = now() where id = any($1::bigint[]) and published_at is null`;
  }

  /** Unpublished rows seen at the last pass. */
  get backlog(): number {
    return this.backlogValue;
  }
  get isLeader(): boolean {
    return this.leader;
  }
  /** The last Kafka or database error, cleared by the next successful pass. */
  get lastError(): string | undefined {
    return this.lastErrorValue;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.stopping = new AbortController();
    const generation = ++this.generation;
    // A stop() still under way (its loop finishing a pass, its marks) shares this.client: the new
    // loop begins once it is over, never beside the old one.
    const previous = this.stopped;
    this.loop = previous
      .then(() => this.run(generation))
      .catch((error: unknown) => {
        this.options.logger.error({ err: error }, 'outbox relay stopped unexpectedly');
      });
  }

  async stop(): Promise<void> {
    this.running = false;
    this.stopping.abort();
    this.signal();
    const loop = this.loop;
    this.stopped = (async () => {
      await loop;
      await this.releaseLeadership();
      await this.housekeeping; // ends after the batch or task in hand
    })();
    await this.stopped;
  }

  private readonly onNotification = (): void => this.signal();

  /** Wakes the relay now (tests, or callers that know they just committed). */
  poke(): void {
    this.signal();
  }

  /**
   * New rows (or a stop): ends the sleep, or, during a pass, makes the next sleep return at once.
   * A NOTIFY that arrives while a pass runs may be for a row that pass did not see; without the
   * flag it was lost, and the row waited for the safety poll.
   */
  private signal(): void {
    if (this.wake) this.wake();
    else this.woken = true;
  }

  private async run(generation: number): Promise<void> {
    let backoff = 100;
    // Rows held back by a transaction still open elsewhere: looked at again soon, then less often
    // while it stays open (a long transaction would otherwise cost 100 passes a second for as long
    // as it runs). A commit that writes an event wakes the relay at once all the same (NOTIFY).
    let heldBack = HELD_BACK_MIN_MS;
    const maxBackoff = this.options.maxBackoffMs ?? 5000;
    while (this.running && generation === this.generation) {
      try {
        if (!this.client) {
          const acquired = await this.acquireLeadership();
          if (!acquired) {
            await this.sleep(LEADER_RETRY_MS);
            continue;
          }
        }
        const published = await this.pass();
        this.lastErrorValue = undefined;
        backoff = 100;
        if (published === 0 && Date.now() >= this.nextHousekeeping) this.startHousekeeping();
        const linger = this.options.lingerMs ?? 5;
        if (published > 0 && published < (this.options.batchSize ?? 500) && linger > 0) {
          await sleep(linger, undefined, { signal: this.stopping.signal }).catch(() => undefined);
        }
        if (published > 0) heldBack = HELD_BACK_MIN_MS;
        else if (this.backlogValue > 0) {
          await this.sleep(heldBack);
          heldBack = Math.min(heldBack * 2, HELD_BACK_MAX_MS);
        } else {
          heldBack = HELD_BACK_MIN_MS;
          await this.sleep(this.options.pollIntervalMs ?? 1000);
        }
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        if (this.lastErrorValue !== message) this.options.logger.warn({ err: error, schema: this.options.schema }, 'outbox relay pass failed; retrying');
        this.lastErrorValue = message;
        if (isConnectionError(error)) await this.releaseLeadership();
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, maxBackoff);
      }
    }
  }

  private async acquireLeadership(): Promise<boolean> {
    const client = await this.options.pool.connect();
    // From here on the connection may fail between queries; without a listener its 'error' event
    // would be thrown, and take the process down.
    client.on('error', ignoreError);
    try {
      const { rows } = await client.query<{ locked: boolean }>('select pg_try_advisory_lock(hashtext($1)) as locked', [this.lockKey]);
      if (!rows[0]?.locked) {
        client.release();
        client.off('error', ignoreError);
        return false;
      }
      await client.query(`listen "${this.channel}"`);
      client.on('notification', this.onNotification);
      this.client = client;
      this.leader = true;
      this.leadership = new AbortController();
      this.floor = '0';
      this.options.logger.info({ schema: this.options.schema }, 'outbox relay is the leader for this schema');
      return true;
    } catch (error) {
      client.release(error as Error);
      client.off('notification', this.onNotification);
      client.off('error', ignoreError);
      throw error;
    }
  }

  private async releaseLeadership(): Promise<void> {
    const client = this.client;
    const unmarked = this.unmarked;
    this.client = undefined;
    this.leader = false;
    this.leadership.abort();
    this.unmarked = [];
    if (!client) return;
    try {
      if (unmarked.length > 0) await client.query(this.markStatement, [unmarked]);
      await client.query(`unlisten "${this.channel}"`);
      await client.query('select pg_advisory_unlock(hashtext($1))', [this.lockKey]);
      client.release();
    } catch (error) {
      // A broken connection loses its locks with it. What it had not marked yet is marked on
      // another connection, so that the next leader does not send it again (marking sent rows
      // needs no lock); if the database is away altogether, the next leader re-sends them.
      client.release(error as Error);
      if (unmarked.length > 0) {
        await this.options.pool.query(this.markStatement, [unmarked]).catch(() => undefined);
      }
    } finally {
      // Back in the pool, the connection takes none of the leader's listeners with it.
      client.off('notification', this.onNotification);
      client.off('error', ignoreError);
    }
  }

  /**
   * One batch: mark what the last pass sent, read publishable rows, send them (up to maxBatchBytes).
   * Returns how many were sent, or a full batch's worth when rows it read were left for the next pass.
   */
  private async pass(): Promise<number> {
    const client = this.client!;
    const batchSize = this.options.batchSize ?? 500;
    // One round trip: marks the rows the last pass sent; the snapshot's xmin (every transaction
    // below it has ended); how many rows committed by transactions at or above it wait (the backlog
    // once this pass is through, so a pass that finds nothing needs no count of its own); and the
    // rows of ended transactions, from the floor on, in id order. The read does not see the marks
    // of its own statement, so the rows just marked are left out by id (the count needs no such
    // care: they were written below the last pass's xmin). An empty outbox still returns a row.
    const marking = this.unmarked;
    const { rows: found } = await client.query<OutboxRow & { xmin: string; waiting: number }>(
      `with marked as (update ${this.table} set published_at = now() where id = any($3::bigint[])),
       snap as (select pg_snapshot_xmin(pg_current_snapshot()) as xmin)
       select snap.xmin::text as xmin,
              (select count(*)::int from ${this.table} where published_at is null and txid >= snap.xmin) as waiting,
              o.id, o.topic, o.key, o.envelope, o.headers
         from snap left join lateral (
           select id, topic, key, envelope, headers from ${this.table}
            where published_at is null and txid < snap.xmin and txid >= $2::xid8 and id <> all($3::bigint[])
            order by id limit $1) o on true`,
      [batchSize, this.floor, marking],
    );
    this.unmarked = [];
    const read = found.filter((r) => r.id !== null);
    // The rows in id order up to the byte cap (at least one); the rest wait for the next pass.
    const maxBytes = this.options.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES;
    const values: string[] = [];
    let bytes = 0;
    for (const row of read) {
      const value = JSON.stringify(row.envelope);
      const size = Buffer.byteLength(value) + row.key.length + row.topic.length;
      if (values.length > 0 && bytes + size > maxBytes) break;
      values.push(value);
      bytes += size;
    }
    const rows = read.slice(0, values.length);
    // Fewer than a batch, all sent: every row of a transaction below xmin is now seen, and is
    // published below unless the send fails; the next passes can start from xmin.
    const complete = read.length < batchSize && rows.length === read.length;
    const nextFloor = complete ? found[0]!.xmin : undefined;
    if (rows.length === 0) {
      this.floor = nextFloor ?? this.floor;
      this.setBacklog(found[0]!.waiting);
      return 0;
    }

    // Grouped by topic in id order; one request in flight keeps per-partition order.
    const byTopic = new Map<string, Array<{ key: string; value: string; headers: Record<string, string> }>>();
    const spans: TraceSpan[] = [];
    for (const [i, row] of rows.entries()) {
      const list = byTopic.get(row.topic) ?? [];
      list.push({ key: row.key, value: values[i]!, headers: this.traced(row, spans) });
      byTopic.set(row.topic, list);
    }
    const started = performance.now();
    try {
      await this.options.producer.sendBatch({
        acks: -1,
        topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
      });
    } catch (error) {
      for (const span of spans) endSpan(span, error);
      // Kafka is away: say how much is waiting (the backoff makes this count cheap enough).
      await this.refreshBacklog().catch(() => undefined);
      throw error;
    }
    for (const span of spans) endSpan(span);
    this.options.metrics?.publishDuration.observe({ schema: this.options.schema }, (performance.now() - started) / 1000);
    this.unmarked = rows.map((r) => r.id);
    if (nextFloor !== undefined) this.floor = nextFloor;
    for (const [topic, messages] of byTopic) {
      this.options.metrics?.outboxPublished.inc({ schema: this.options.schema, topic }, messages.length);
    }
    if (complete) {
      // Everything below xmin is out: what is left is what later transactions wrote.
      this.setBacklog(found[0]!.waiting);
      return rows.length;
    } else {
      // Draining a large backlog: estimate instead of counting it again on every batch.
      this.backlogValue = Math.max(this.backlogValue - rows.length, rows.length);
      this.options.metrics?.outboxBacklog.set({ schema: this.options.schema }, this.backlogValue);
    }
    // More is waiting below xmin: counted as a full batch, so the next pass does not linger.
    return Math.max(rows.length, batchSize);
  }

  /**
   * A row written inside a trace is sent as a PRODUCER span of that trace (`send <topic>`), and the
   * record carries that span as its parent for the consumers. Rows without one go as they are.
   */
  private traced(row: OutboxRow, spans: TraceSpan[]): Record<string, string> {
    if (!tracingEnabled() || row.headers[KAFKA_HEADERS.traceparent] === undefined) return row.headers;
    const parent = contextFromHeaders(row.headers).setValue(TRACER_KEY, serviceTracer(this.options.schema));
    const started = startChildSpan(`send ${row.topic}`, {
      kind: SpanKind.PRODUCER,
      parent,
      attributes: {
        'messaging.system': 'kafka',
        'messaging.operation.type': 'send',
        'messaging.destination.name': row.topic,
        'messaging.message.id': (row.envelope as { id?: string }).id ?? '',
        'messaging.kafka.message.key': row.key,
      },
    });
    if (!started) return row.headers;
    spans.push(started.span);
    return { ...row.headers, ...traceHeaders(started.context) };
  }

  /**
   * Starts a round of housekeeping beside the passes, on a connection of its own: a purge of a
   * week of rows runs for many seconds, and on the leader's connection every event committed
   * meanwhile waited for it.
   */
  private startHousekeeping(): void {
    const housekeeping = this.options.housekeeping;
    if (!housekeeping || housekeeping.tasks.length === 0) {
      this.nextHousekeeping = Number.POSITIVE_INFINITY;
      return;
    }
    if (this.housekeeping) return;
    this.nextHousekeeping = Date.now() + housekeeping.intervalMs;
    // Ends after the batch in hand when the relay stops or loses the lead (once per schema).
    const ending = AbortSignal.any([this.stopping.signal, this.leadership.signal]);
    this.housekeeping = this.housekeep(housekeeping.tasks, ending).finally(() => (this.housekeeping = undefined));
  }

  /** Runs the tasks one after the other until stopped; a failing task waits for the next round. */
  private async housekeep(tasks: HousekeepingTask[], stopping: AbortSignal): Promise<void> {
    const labels = { schema: this.options.schema };
    let client: pg.PoolClient;
    try {
      client = await this.options.pool.connect();
    } catch (error) {
      this.options.logger.warn({ err: error, ...labels }, 'housekeeping could not get a connection; it runs again next time');
      return;
    }
    client.on('error', ignoreError);
    let broken: Error | undefined;
    try {
      for (const task of tasks) {
        if (stopping.aborted) return;
        try {
          const removed = await task.run(client, stopping);
          this.options.metrics?.housekeepingRuns.inc({ ...labels, task: task.name, outcome: 'ok' });
          if (Object.values(removed).some((n) => n > 0)) this.options.logger.info({ ...labels, task: task.name, removed }, 'housekeeping');
        } catch (error) {
          this.options.metrics?.housekeepingRuns.inc({ ...labels, task: task.name, outcome: 'failed' });
          this.options.logger.warn({ err: error, ...labels, task: task.name }, 'housekeeping task failed; it runs again next time');
          if (isConnectionError(error)) {
            broken = error as Error;
            return;
          }
        }
      }
    } finally {
      client.release(broken);
      client.off('error', ignoreError);
    }
  }

  /** Counts every unpublished row from the floor on (while Kafka is away, the rows waiting for it). */
  private async refreshBacklog(): Promise<void> {
    const { rows } = await this.client!.query<{ n: number }>(
      `select count(*)::int as n from ${this.table} where published_at is null and txid >= $1::xid8`,
      [this.floor],
    );
    this.setBacklog(rows[0]?.n ?? 0);
  }

  private setBacklog(value: number): void {
    this.backlogValue = value;
    this.options.metrics?.outboxBacklog.set({ schema: this.options.schema }, value);
  }

  private sleep(ms: number): Promise<void> {
    if (this.woken) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }
}

/** The leader's connection may fail while idle; the next query on it reports that. */
function ignoreError(): void {}

function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: string }).code;
  const message = error instanceof Error ? error.message : '';
  // Class 08 (connection exception), 57P01 admin shutdown, and node-postgres' own errors.
  return (
    (typeof code === 'string' && (code.startsWith('08') || code === '57P01' || code === '57P03')) ||
    /Connection terminated|Client has encountered a connection error|not queryable/.test(message)
  );
}
