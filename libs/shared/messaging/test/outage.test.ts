import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Kafka } from 'kafkajs';
import { sql } from 'drizzle-orm';
import { Registry } from 'prom-client';
import { testAdminDatabaseUrl } from '@vivier/service-kit/testing';
import type { DevKafka } from '@vivier/dev-kafka';
import { createProducer } from '../src/kafka';
import type { EventProducer } from '../src/producer';
import { createPublisher } from '../src/publish';
import { OutboxRelay } from '../src/relay';
import { EventConsumer } from '../src/consumer';
import { MessagingMetrics } from '../src/metrics';
import { createTestSchema, type TestSchema } from '../src/testing';
import { chatEvent, seqOf, silentLogger, sleep, startBroker } from './helpers';

let dev: DevKafka;
let kafka: Kafka;
let ts: TestSchema;

beforeAll(async () => {
  ({ dev, kafka } = await startBroker());
  ts = await createTestSchema(testAdminDatabaseUrl());
  await ts.pool.query(`create table "${ts.schema}".effects (event_id uuid not null, chat_id text not null, seq int not null)`);
});
afterAll(async () => {
  await ts?.drop();
  await dev?.stop();
});

describe('Kafka outage under steady publishing', () => {
  it('loses nothing and applies nothing twice when the broker is down for 30 s', async () => {
    const metrics = new MessagingMetrics(new Registry());
    const relayProducer: EventProducer = createProducer(kafka, false);
    const consumerProducer: EventProducer = createProducer(kafka, false);
    const relay = new OutboxRelay({ pool: ts.pool, schema: ts.schema, producer: relayProducer, logger: silentLogger, metrics, pollIntervalMs: 200, maxBackoffMs: 1000 });
    const consumer = new EventConsumer({
      kafka,
      producer: consumerProducer,
      group: 'worker',
      topics: ['chat.events'],
      handlers: {
        'vivier.chat.message.created.v1': async (event, { tx }) => {
          await tx.execute(sql`insert into ${sql.identifier(ts.schema)}.effects (event_id, chat_id, seq) values (${event.id}, ${event.data.chatId}, ${seqOf(event)})`);
        },
      },
      db: ts.db,
      processedEvents: ts.tables.processedEvents,
      logger: silentLogger,
      metrics,
      sessionTimeoutMs: 6000,
      heartbeatIntervalMs: 500,
      maxWaitTimeMs: 200,
    });
    relay.start();
    consumer.start();
    const publish = createPublisher(ts.tables.outbox);
    const chats = Array.from({ length: 4 }, () => randomUUID());
    let sent = 0;
    let publishing = true;
    const publisher = (async () => {
      while (publishing) {
        const chatId = chats[sent % chats.length]!;
        await ts.db.transaction((tx) => publish(tx, chatEvent(chatId, sent)));
        sent += 1;
        await sleep(50);
      }
    })();

    try {
      await sleep(3000);
      await dev.brokerDown(1);
      const downAt = Date.now();
      let maxBacklog = 0;
      while (Date.now() - downAt < 30_000) {
        await sleep(1000);
        maxBacklog = Math.max(maxBacklog, relay.backlog);
      }
      await dev.brokerUp(1);
      await sleep(3000);
      publishing = false;
      await publisher;

      expect(maxBacklog).toBeGreaterThan(100);
      const count = async () => Number((await ts.pool.query(`select count(*) from "${ts.schema}".effects`)).rows[0].count);
      await expect.poll(count, { timeout: 60_000, interval: 500 }).toBe(sent);
      const { rows } = await ts.pool.query(`select count(distinct event_id)::int as n from "${ts.schema}".effects`);
      expect(rows[0].n).toBe(sent);
      for (const chatId of chats) {
        const seqs = (await ts.pool.query(`select seq from "${ts.schema}".effects where chat_id = $1`, [chatId])).rows.map((r) => r.seq as number);
        expect(seqs.length).toBeGreaterThan(0);
      }
      await expect.poll(() => relay.backlog, { timeout: 10_000 }).toBe(0);
    } finally {
      publishing = false;
      await publisher;
      await consumer.stop();
      await relay.stop();
      await relayProducer.disconnect();
      await consumerProducer.disconnect();
    }
  }, 150_000);
});
