import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Kafka, logLevel } from 'kafkajs';
import { createEvent, EVENTS, toKafkaRecord } from '@vivier/contracts';
import type { DevKafka } from '@vivier/dev-kafka';
import { startKafka, startServiceProcess, stopProcess, waitReady, type ServiceProcess, freePort } from '@vivier/dev-stack';
import { isolatedDatabase } from '@vivier/dev-stack/test-infra';
import { testEnv } from '@vivier/service-kit/testing';

interface Ready {
  status: string;
  checks: Record<string, { status: string; error?: string }>;
}

// A service whose Kafka goes away keeps serving HTTP, says so on /ready, keeps its events in
// the outbox without crashing or restarting, and delivers them all once Kafka is back.
describe('a service through a Kafka outage', () => {
  let dev: DevKafka;
  let chat: ServiceProcess;
  let base = '';
  let db: pg.Client;
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;

  beforeAll(async () => {
    dev = await startKafka();
    // Its own database: this chat's relay must not take over the outbox of the run's other chats.
    database = await isolatedDatabase('kafka_outage');
    const port = await freePort();
    const env = testEnv('chat', { KAFKA_BROKERS: dev.bootstrap.join(','), OUTBOX_POLL_INTERVAL_MS: '200', LOG_LEVEL: 'warn', DATABASE_URL: database.serviceUrls.chat });
    chat = startServiceProcess('chat', { port, env: { ...process.env, ...env } });
    await waitReady(chat);
    base = `http://127.0.0.1:${port}`;
    db = new pg.Client({ connectionString: database.serviceUrls.chat });
    await db.connect();
  });
  afterAll(async () => {
    await db?.end();
    if (chat) await stopProcess(chat);
    await dev?.stop();
    await database?.drop();
  });

  it('stays up, reports kafka degraded, keeps the backlog, and drains it when Kafka returns', async () => {
    const ready = async () => {
      const res = await fetch(`${base}/ready`);
      return { http: res.status, body: (await res.json()) as Ready };
    };
    await expect.poll(async () => (await ready()).body.checks.kafka?.status, { timeout: 20_000 }).toBe('up');

    await dev.brokerDown(1);
    const chatId = randomUUID();
    const events = Array.from({ length: 20 }, () =>
      createEvent(EVENTS.chatCreated, { chatId, userId: randomUUID(), title: 'outage', model: 'sim/fast', createdAt: new Date().toISOString() }),
    );
    try {
      await expect.poll(async () => (await ready()).body.checks.kafka?.status, { timeout: 20_000 }).toBe('down');
      const during = await ready();
      expect(during.http).toBe(200);
      expect(during.body.status).toBe('degraded');

      // State changes go on being written with their events while Kafka is away.
      for (const event of events) {
        const record = toKafkaRecord(event);
        await db.query('insert into chat.outbox (event_id, topic, key, envelope, headers) values ($1, $2, $3, $4, $5)', [
          event.id,
          record.topic,
          record.key,
          JSON.stringify(event),
          JSON.stringify(record.headers),
        ]);
      }
      const started = Date.now();
      while (Date.now() - started < 10_000) {
        expect((await fetch(`${base}/health`)).status).toBe(200);
        await new Promise((r) => setTimeout(r, 1000));
      }
      expect(chat.child.exitCode).toBeNull();
      const metrics = await (await fetch(`${base}/metrics`)).text();
      const backlog = Number(/vivier_outbox_backlog_events\{[^}]*schema="chat"[^}]*\} (\d+)/.exec(metrics)?.[1]);
      expect(backlog).toBeGreaterThanOrEqual(20);
    } finally {
      await dev.brokerUp(1);
    }

    await expect.poll(async () => Number((await db.query('select count(*) from chat.outbox where published_at is null')).rows[0].count), { timeout: 30_000 }).toBe(0);
    // Consumers rejoin their groups after the broker returns (a session timeout on the dev broker).
    await expect.poll(async () => (await ready()).body.checks.kafka?.status, { timeout: 45_000 }).toBe('up');

    const kafka = new Kafka({ brokers: dev.bootstrap, logLevel: logLevel.NOTHING });
    const consumer = kafka.consumer({ groupId: `check-${randomUUID()}`, maxWaitTimeInMs: 100 });
    const seen = new Set<string>();
    await consumer.connect();
    await consumer.subscribe({ topics: ['chat.events'], fromBeginning: true });
    await consumer.run({ eachMessage: async ({ message }) => void seen.add(JSON.parse(message.value!.toString()).id as string) });
    try {
      await expect.poll(() => events.every((e) => seen.has(e.id)), { timeout: 20_000 }).toBe(true);
    } finally {
      await consumer.disconnect();
    }
    expect(chat.child.exitCode).toBeNull();
  }, 120_000);
});
