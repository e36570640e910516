import type pg from 'pg';
import type { Producer } from 'kafkajs';
import type { FastifyBaseLogger } from 'fastify';
import type { MessagingMetrics } from './metrics';
import { ensureConnected } from './producer';
import type { HousekeepingTask } from './housekeeping';

export interface OutboxRelayOptions {
  pool: pg.Pool;
  /** The service's schema; its outbox table is `<schema>.outbox`. */
  schema: string;
  producer: Producer;
  logger: FastifyBaseLogger;
  metrics?: MessagingMetrics;
  batchSize?: number;
  /** Safety poll; NOTIFY from the outbox trigger normally wakes the relay at once. */
  pollIntervalMs?: number;
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
 *   A crash between send and mark re-sends a row: consumers dedupe by event id.
 */
export class OutboxRelay {
  private running = false;
  private loop: Promise<void> | undefined;
  private client: pg.PoolClient | undefined;
  private wake: (() => void) | undefined;
  private backlogValue = 0;
  private lastErrorValue: string | undefined;
  private leader = false;
  private nextHousekeeping = 0;
  private readonly channel: string;
  private readonly table: string;
  private readonly lockKey: string;

  constructor(private readonly options: OutboxRelayOptions) {
    if (!/^[a-z_][a-z0-9_]*$/.test(options.schema)) throw new Error(`unsafe schema name ${options.schema}`);
    this.channel = `vivier_outbox_${options.schema}`;
    this.table = `"${options.schema}"."outbox"`;
    this.lockKey = `vivier-outbox-relay:${options.schema}`;
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
    this.loop = this.run().catch((error: unknown) => {
      this.options.logger.error({ err: error }, 'outbox relay stopped unexpectedly');
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    this.wake?.();
    await this.loop;
    await this.releaseLeadership();
  }

  /** Wakes the relay now (tests, or callers that know they just committed). */
  poke(): void {
    this.wake?.();
  }

  private async run(): Promise<void> {
    let backoff = 100;
    const maxBackoff = this.options.maxBackoffMs ?? 5000;
    while (this.running) {
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
        if (published === 0 && Date.now() >= this.nextHousekeeping) await this.housekeep();
        if (published === 0) {
          // Rows written by transactions still open elsewhere become publishable very soon.
          await this.sleep(this.backlogValue > 0 ? 10 : (this.options.pollIntervalMs ?? 1000));
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
    try {
      const { rows } = await client.query<{ locked: boolean }>('select pg_try_advisory_lock(hashtext($1)) as locked', [this.lockKey]);
      if (!rows[0]?.locked) {
        client.release();
        return false;
      }
      await client.query(`listen "${this.channel}"`);
      client.on('notification', () => this.wake?.());
      client.on('error', () => undefined);
      this.client = client;
      this.leader = true;
      this.options.logger.info({ schema: this.options.schema }, 'outbox relay is the leader for this schema');
      return true;
    } catch (error) {
      client.release(error as Error);
      throw error;
    }
  }

  private async releaseLeadership(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.leader = false;
    if (!client) return;
    try {
      await client.query(`unlisten "${this.channel}"`);
      await client.query('select pg_advisory_unlock(hashtext($1))', [this.lockKey]);
      client.release();
    } catch (error) {
      // A broken connection loses its locks with it.
      client.release(error as Error);
    }
  }

  /** One batch: read publishable rows, send them, mark them. Returns how many were published. */
  private async pass(): Promise<number> {
    const client = this.client!;
    const batchSize = this.options.batchSize ?? 500;
    const { rows } = await client.query<OutboxRow>(
      `select id, topic, key, envelope, headers from ${this.table}
        where published_at is null and txid < pg_snapshot_xmin(pg_current_snapshot())
        order by id limit $1`,
      [batchSize],
    );
    if (rows.length === 0) {
      await this.refreshBacklog();
      return 0;
    }

    // Grouped by topic in id order; one request in flight keeps per-partition order.
    const byTopic = new Map<string, Array<{ key: string; value: string; headers: Record<string, string> }>>();
    for (const row of rows) {
      const list = byTopic.get(row.topic) ?? [];
      list.push({ key: row.key, value: JSON.stringify(row.envelope), headers: row.headers });
      byTopic.set(row.topic, list);
    }
    const started = performance.now();
    try {
      await ensureConnected(this.options.producer);
      await this.options.producer.sendBatch({
        acks: -1,
        topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
      });
    } catch (error) {
      // Kafka is away: say how much is waiting (the backoff makes this count cheap enough).
      await this.refreshBacklog().catch(() => undefined);
      throw error;
    }
    this.options.metrics?.publishDuration.observe({ schema: this.options.schema }, (performance.now() - started) / 1000);
    await client.query(`update ${this.table} set published_at = now() where id = any($1::bigint[])`, [rows.map((r) => r.id)]);
    for (const [topic, messages] of byTopic) {
      this.options.metrics?.outboxPublished.inc({ schema: this.options.schema, topic }, messages.length);
    }
    if (rows.length < batchSize) {
      await this.refreshBacklog();
    } else {
      // Draining a large backlog: estimate instead of counting it again on every batch.
      this.backlogValue = Math.max(this.backlogValue - rows.length, rows.length);
      this.options.metrics?.outboxBacklog.set({ schema: this.options.schema }, this.backlogValue);
    }
    return rows.length;
  }

  /** Runs every housekeeping task on the leader's connection; a failing task waits for the next round. */
  private async housekeep(): Promise<void> {
    const housekeeping = this.options.housekeeping;
    if (!housekeeping || housekeeping.tasks.length === 0) {
      this.nextHousekeeping = Number.POSITIVE_INFINITY;
      return;
    }
    this.nextHousekeeping = Date.now() + housekeeping.intervalMs;
    for (const task of housekeeping.tasks) {
      if (!this.running) return;
      try {
        const removed = await task.run(this.client!);
        this.options.metrics?.housekeepingRuns.inc({ schema: this.options.schema, task: task.name, outcome: 'ok' });
        if (Object.values(removed).some((n) => n > 0)) this.options.logger.info({ schema: this.options.schema, task: task.name, removed }, 'housekeeping');
      } catch (error) {
        this.options.metrics?.housekeepingRuns.inc({ schema: this.options.schema, task: task.name, outcome: 'failed' });
        this.options.logger.warn({ err: error, schema: this.options.schema, task: task.name }, 'housekeeping task failed; it runs again next time');
      }
    }
  }

  private async refreshBacklog(): Promise<void> {
    const { rows } = await this.client!.query<{ n: number }>(`select count(*)::int as n from ${this.table} where published_at is null`);
    this.backlogValue = rows[0]?.n ?? 0;
    this.options.metrics?.outboxBacklog.set({ schema: this.options.schema }, this.backlogValue);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}

function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: string }).code;
  const message = error instanceof Error ? error.message : '';
  // Class 08 (connection exception), 57P01 admin shutdown, and node-postgres' own errors.
  return (
    (typeof code === 'string' && (code.startsWith('08') || code === '57P01' || code === '57P03')) ||
    /Connection terminated|Client has encountered a connection error|not queryable/.test(message)
  );
}
