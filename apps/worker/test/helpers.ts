import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel, type Consumer, type Producer } from 'kafkajs';
import pg from 'pg';
import { toKafkaRecord, type AnyEvent } from '@vivier/contracts';
import { testEnv } from '@vivier/service-kit/testing';
import type { ServiceApp } from '@vivier/service-kit';
import { buildWorkerApp, type BuildWorkerAppOptions } from '../src/app';
import { loadWorkerConfig, type WorkerConfig } from '../src/config';

export function writeProvidersFile(content: unknown): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vivier-worker-providers-'));
  const file = path.join(dir, 'providers.json');
  writeFileSync(file, JSON.stringify(content, null, 2));
  return file;
}

export interface TestWorker {
  app: ServiceApp;
  config: WorkerConfig;
  close(): Promise<void>;
}

export async function startWorker(env: Record<string, string>, options: BuildWorkerAppOptions = {}): Promise<TestWorker> {
  const config = loadWorkerConfig(testEnv('worker', env));
  const app = await buildWorkerApp(config, { env: {}, ...options });
  await app.ready();
  return { app, config, close: () => app.close() };
}

export function workerPool(config: WorkerConfig): pg.Pool {
  return new pg.Pool({ connectionString: config.DATABASE_URL, max: 2 });
}

export async function eventually<T>(check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 45_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms${lastError ? `: ${String(lastError)}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Events the worker wrote to its outbox, of one type and subject. */
export async function outboxEvents(pool: pg.Pool, type: string, subject: string): Promise<AnyEvent[]> {
  const { rows } = await pool.query<{ envelope: AnyEvent }>(
    `select envelope from worker.outbox where envelope->>'type' = $1 and envelope->>'subject' = $2 order by id`,
    [type, subject],
  );
  return rows.map((r) => r.envelope);
}

/** Waits until the worker has handled the event (its id is in worker.processed_events). */
export async function handled(pool: pg.Pool, eventId: string): Promise<void> {
  await eventually(async () => (await pool.query('select 1 from worker.processed_events where event_id = $1', [eventId])).rows.length === 1);
}

/** A producer of input events and a reader of any topic, on the test broker. */
export class TestKafka {
  private readonly kafka: Kafka;
  private producer: Producer | undefined;
  private readonly consumers: Consumer[] = [];

  constructor(brokers: string) {
    this.kafka = new Kafka({ clientId: `worker-test-${randomUUID().slice(0, 8)}`, brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  }

  async produce(event: AnyEvent): Promise<void> {
    if (!this.producer) {
      this.producer = this.kafka.producer({ allowAutoTopicCreation: false });
      await this.producer.connect();
    }
    const record = toKafkaRecord(event);
    await this.producer.send({ topic: record.topic, acks: -1, messages: [{ key: record.key, value: record.value, headers: record.headers }] });
  }

  /** Collects every record of a topic from the beginning (random group), with its headers. */
  async collect(topic: string): Promise<Array<{ event: AnyEvent; headers: Record<string, string> }>> {
    const seen: Array<{ event: AnyEvent; headers: Record<string, string> }> = [];
    const consumer = this.kafka.consumer({ groupId: `worker-test-${randomUUID()}`, sessionTimeout: 6000, heartbeatInterval: 500, maxWaitTimeInMs: 200 });
    this.consumers.push(consumer);
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(Array.isArray(v) ? v[0] : v);
        if (message.value) seen.push({ event: JSON.parse(message.value.toString()) as AnyEvent, headers });
      },
    });
    return seen;
  }

  async close(): Promise<void> {
    await Promise.all(this.consumers.map((c) => c.disconnect().catch(() => undefined)));
    await this.producer?.disconnect().catch(() => undefined);
  }
}
