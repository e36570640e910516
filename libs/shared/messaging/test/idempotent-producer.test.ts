import { createRequire } from 'node:module';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Kafka, Producer, ProducerConfig } from 'kafkajs';
import { Registry } from 'prom-client';
import { testAdminDatabaseUrl } from '@vivier/service-kit/testing';
import type { DevKafka } from '@vivier/dev-kafka';
import { createProducer } from '../src/kafka';
import { createPublisher } from '../src/publish';
import { OutboxRelay } from '../src/relay';
import { MessagingMetrics } from '../src/metrics';
import { createTestSchema, type TestSchema } from '../src/testing';
import { chatEvent, collect, silentLogger, startBroker } from './helpers';

// An idempotent producer whose send failed is replaced before the next send: a broker that has
// forgotten the producer, or has seen the numbers of a request kafkajs took back, refuses every
// later send of the old one (OUT_OF_ORDER_SEQUENCE_NUMBER), and the outbox would stop for good.
//
// The dev broker (librdkafka's mock) hands out producer ids but does not check sequence numbers,
// so the refusal is injected; what the test checks is that the relay's next try asks the broker
// for a new producer id and gets the event through. And the mock names a controller (broker 0)
// that its metadata does not list, which kafkajs's idempotent connect() looks up to ask for the
// producer id (DEV-STACK.md): below, for this file only, kafkajs then asks the first broker, as a
// real cluster's controller would answer it.
const Cluster = createRequire(import.meta.url)('kafkajs/src/cluster/index.js') as {
  prototype: { findControllerBroker(this: MockCluster): Promise<unknown> };
};
type MockCluster = {
  brokerPool: { metadata?: { controllerId: number; brokers: Array<{ nodeId: number }> } };
  findBroker(b: { nodeId: number }): Promise<unknown>;
};
const findControllerBroker = Cluster.prototype.findControllerBroker;

let dev: DevKafka;
let kafka: Kafka;
let ts: TestSchema;

beforeAll(async () => {
  Cluster.prototype.findControllerBroker = async function (this: MockCluster) {
    const metadata = this.brokerPool.metadata;
    if (metadata && !metadata.brokers.some((b) => b.nodeId === metadata.controllerId)) {
      return this.findBroker({ nodeId: metadata.brokers[0]!.nodeId });
    }
    return findControllerBroker.call(this);
  };
  ({ dev, kafka } = await startBroker());
  ts = await createTestSchema(testAdminDatabaseUrl());
});
afterAll(async () => {
  Cluster.prototype.findControllerBroker = findControllerBroker;
  await ts?.drop();
  await dev?.stop();
});

const PRODUCE = 0;
const OUT_OF_ORDER_SEQUENCE_NUMBER = 45; // not retriable: kafkajs gives up on the send at once
const INIT_PRODUCER_ID = 22;
const COORDINATOR_NOT_AVAILABLE = 15; // kafkajs asks for a producer id again after this one

/** The kafkajs producers `kafka` makes from now on, with how many producer ids each asked the broker for. */
function watchProducers(): Array<{ producer: Producer; initProducerIds: number }> {
  const made: Array<{ producer: Producer; initProducerIds: number }> = [];
  const make = kafka.producer.bind(kafka);
  kafka.producer = (config?: ProducerConfig) => {
    const producer = make(config);
    const entry = { producer, initProducerIds: 0 };
    producer.on(producer.events.REQUEST, (e) => {
      if (e.payload.apiName === 'InitProducerId') entry.initProducerIds += 1;
    });
    made.push(entry);
    return producer;
  };
  return made;
}

describe('the idempotent producer', () => {
  it('is replaced after a refused send, so the relay gets its events through instead of failing for good', async () => {
    const made = watchProducers();
    const metrics = new MessagingMetrics(new Registry());
    const renewals: unknown[] = [];
    const producer = createProducer(kafka, true, (error) => renewals.push(error));
    const relay = new OutboxRelay({ pool: ts.pool, schema: ts.schema, producer, logger: silentLogger, metrics, pollIntervalMs: 50, maxBackoffMs: 200 });
    const sink = await collect(kafka, ['chat.events']);
    try {
      relay.start();
      await expect.poll(() => relay.isLeader, { timeout: 10_000 }).toBe(true);
      const chatId = randomUUID();
      const first = chatEvent(chatId, 1);
      await ts.db.transaction((tx) => createPublisher(ts.tables.outbox)(tx, first));
      await expect.poll(() => sink.records.filter((r) => r.key === chatId).length, { timeout: 20_000, interval: 20 }).toBe(1);
      expect(made.length).toBe(1);
      expect(made[0]!.initProducerIds).toBe(1); // connected as an idempotent producer

      // The broker refuses the next write as out of sequence.
      await dev.pushRequestErrors(PRODUCE, OUT_OF_ORDER_SEQUENCE_NUMBER, 1);
      const second = chatEvent(chatId, 2);
      await ts.db.transaction((tx) => createPublisher(ts.tables.outbox)(tx, second));
      await expect.poll(() => sink.records.filter((r) => r.key === chatId).length, { timeout: 20_000, interval: 20 }).toBe(2);

      // The failed send retired the first producer; the relay's next pass went through a new one,
      // which asked the broker for a producer id of its own.
      expect(renewals).toHaveLength(1);
      expect((renewals[0] as Error).message).toMatch(/sequence/i);
      expect(made.length).toBe(2);
      expect(made[1]!.initProducerIds).toBe(1);
      expect(producer.generation).toBe(2);
      expect(JSON.parse(sink.records.filter((r) => r.key === chatId).at(-1)!.value).id).toBe(second.id);
    } finally {
      await relay.stop();
      await producer.disconnect();
      await sink.stop();
    }
  }, 60_000);

  it('sends nothing before it has its producer id, even a send that starts while the id is being asked for', async () => {
    // kafkajs says an idempotent producer is connected before it asks for its producer id; a send
    // that went by that would go out without one (no sequence numbers, no duplicate check).
    const made = watchProducers();
    const requests: Array<{ apiName: string; sentAt: number; answeredAt: number }> = [];
    const producer = createProducer(kafka, true);
    const kafkajsProducer = made[0]!.producer;
    kafkajsProducer.on(kafkajsProducer.events.REQUEST, (e) =>
      requests.push({ apiName: e.payload.apiName, sentAt: e.payload.sentAt, answeredAt: e.payload.sentAt + e.payload.duration }),
    );
    let second: Promise<unknown> | undefined;
    kafkajsProducer.on(kafkajsProducer.events.CONNECT, () => {
      second = producer.send({ topic: 'chat.events', acks: -1, messages: [{ value: 'second' }] });
    });
    // The broker is not ready to hand out producer ids for its first three asks: kafkajs asks
    // again after growing pauses (about a second and a half in all).
    await dev.pushRequestErrors(INIT_PRODUCER_ID, COORDINATOR_NOT_AVAILABLE, 3);
    try {
      await producer.send({ topic: 'chat.events', acks: -1, messages: [{ value: 'first' }] });
      await second;
      const ids = requests.filter((r) => r.apiName === 'InitProducerId');
      expect(ids).toHaveLength(4);
      const produces = requests.filter((r) => r.apiName === 'Produce');
      expect(produces).toHaveLength(2);
      for (const produce of produces) expect(produce.sentAt).toBeGreaterThanOrEqual(ids.at(-1)!.answeredAt);
    } finally {
      await producer.disconnect();
    }
  }, 30_000);

  it('is not replaced when it could not connect (Kafka away): nothing was numbered, and an outage makes no producer per try', async () => {
    const renewals: unknown[] = [];
    const producer = createProducer(kafka, true, (error) => renewals.push(error));
    await dev.brokerDown(1);
    try {
      for (let i = 0; i < 2; i++) await expect(producer.send({ topic: 'chat.events', acks: -1, messages: [{ value: 'x' }] })).rejects.toThrow();
      expect(renewals).toEqual([]);
      expect(producer.generation).toBe(1);
    } finally {
      await dev.brokerUp(1);
    }
    await producer.send({ topic: 'chat.events', acks: -1, messages: [{ value: 'y' }] });
    expect(producer.generation).toBe(1);
    await producer.disconnect();
  }, 60_000);

  it('is not replaced when it is not idempotent (a plain producer has no numbers to fall out of)', async () => {
    const made = watchProducers();
    const producer = createProducer(kafka, false);
    try {
      await dev.pushRequestErrors(PRODUCE, OUT_OF_ORDER_SEQUENCE_NUMBER, 1);
      await expect(producer.send({ topic: 'chat.events', acks: -1, messages: [{ value: 'x' }] })).rejects.toThrow(/sequence/i);
      await producer.send({ topic: 'chat.events', acks: -1, messages: [{ value: 'y' }] });
      expect(made.length).toBe(1);
      expect(producer.generation).toBe(1);
    } finally {
      await producer.disconnect();
    }
  }, 30_000);
});
