import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import type { Admin, Consumer, ConsumerConfig, Kafka } from 'kafkajs';
import { toKafkaRecord, type ConsumerGroup } from '@vivier/contracts';
import { createPool } from '@vivier/service-kit';
import { testAdminDatabaseUrl } from '@vivier/service-kit/testing';
import type { DevKafka } from '@vivier/dev-kafka';
import { createProducer } from '../src/kafka';
import type { EventProducer } from '../src/producer';
import type { EventConsumer, EventConsumerOptions } from '../src/consumer';
import { createTestSchema, type TestSchema } from '../src/testing';
import { chatEvent, sleep, startBroker, testConsumer } from './helpers';

// Stopping a consumer whose group coordinator is slow to answer: while it is still joining, and
// while a leave cannot get an answer. Two brokers, the coordinator of the groups here on broker 2,
// whose answers the tests delay (broker 1 leads the partitions and answers at once).
let dev: DevKafka;
let kafka: Kafka;
let admin: Admin;
let ts: TestSchema;
let producer: EventProducer;
let partitions: number;

beforeAll(async () => {
  ({ dev, kafka } = await startBroker(2));
  for (const group of ['admin', 'worker']) await dev.setGroupCoordinator(group, 2);
  ts = await createTestSchema(testAdminDatabaseUrl());
  producer = createProducer(kafka, false);
  await producer.connect();
  admin = kafka.admin();
  await admin.connect();
  partitions = (await admin.fetchTopicMetadata({ topics: ['chat.events'] })).topics[0]!.partitions.length;
});
afterAll(async () => {
  await admin?.disconnect();
  await producer?.disconnect();
  await ts?.drop();
  await dev?.stop();
});

/**
 * The Kafka client, telling `onRequest` the name of every request a consumer it makes gets an
 * answer to, and `onDisconnect` when such a consumer has disconnected.
 */
function observed(on: { request?: (apiName: string) => void; disconnect?: () => void }): Kafka {
  return {
    consumer: (config: ConsumerConfig): Consumer => {
      const consumer = kafka.consumer(config);
      consumer.on(consumer.events.REQUEST, (event) => on.request?.(event.payload.apiName));
      consumer.on(consumer.events.DISCONNECT, () => on.disconnect?.());
      return consumer;
    },
  } as unknown as Kafka;
}

function eventConsumer(group: ConsumerGroup, overrides: Partial<EventConsumerOptions> = {}): EventConsumer {
  return testConsumer({ kafka, producer, ts }, group, overrides);
}

/**
 * The partitions of chat.events a new member of `group` is given when it joins (the dev broker has
 * no DescribeGroups): all of them when it is alone in the group.
 */
async function partitionsOfANewMember(group: string): Promise<number> {
  const witness = kafka.consumer({ groupId: group, sessionTimeout: 6000, heartbeatInterval: 500, maxWaitTimeInMs: 200 });
  const joined = new Promise<number>((resolve) =>
    witness.on(witness.events.GROUP_JOIN, (event) => resolve((event.payload.memberAssignment['chat.events'] ?? []).length)),
  );
  try {
    await witness.connect();
    await witness.subscribe({ topics: ['chat.events', `chat.events.retry.${group}`] });
    await witness.run({ eachBatch: async () => new Promise<void>(() => undefined) });
    return await joined;
  } finally {
    await witness.disconnect();
  }
}

describe('stopping a consumer', () => {
  it('stopped while it is still joining its group, leaves no member behind that goes on fetching', async () => {
    // kafkajs' disconnect() during run() used to leave the join going, unreachable: it joined and
    // fetched after the stop, for good, holding its partitions.
    let coordinatorFound!: () => void;
    const found = new Promise<void>((resolve) => (coordinatorFound = resolve));
    const consumer = eventConsumer('admin', {
      kafka: observed({ request: (api) => api === 'GroupCoordinator' && coordinatorFound() }),
      stopTimeoutMs: 30_000,
    });
    await dev.setRtt(2, 1500);
    try {
      consumer.start();
      await found;
      await sleep(300); // its JoinGroup is now waiting on the coordinator
      await consumer.stop();
    } finally {
      await dev.setRtt(2, 0);
    }
    expect(consumer.isHealthy).toBe(false);
    // Long enough for a member left behind to have joined (it would stay, heartbeating).
    await sleep(4000);
    expect(await partitionsOfANewMember('admin')).toBe(partitions);
  }, 60_000);

  it('does not wait past its stop timeout for a coordinator that does not answer the leave', async () => {
    let disconnected = false;
    const consumer = eventConsumer('worker', { kafka: observed({ disconnect: () => (disconnected = true) }) });
    consumer.start();
    while (!consumer.isHealthy) await sleep(50);
    await dev.setRtt(2, 60_000);
    try {
      // Returns after the stop timeout (the session timeout, 6 s, by default), the leave still
      // waiting on the coordinator: kafkajs' consumer has not disconnected yet.
      await consumer.stop();
      expect(disconnected).toBe(false);
    } finally {
      await dev.setRtt(2, 0);
    }
  }, 40_000);

  it('waits for a handler left behind, whatever its stop timeout: its connection is ended through the pool, which then closes', async () => {
    // A handler that ignores its signal is left behind 5 s after the stop, and its connection is
    // ended with a statement on the consumer's pool. Returning at a shorter stop timeout let the
    // service close that pool first: the handler's client was never given back, and the pool's
    // end() waited for it for good.
    const pool = createPool({ url: testAdminDatabaseUrl(), poolMax: 4, applicationName: 'vivier-consumer-stop-test' });
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    const consumer = eventConsumer('chat', {
      db: drizzle(pool),
      stopTimeoutMs: 500,
      handlers: {
        'vivier.chat.message.created.v1': async (_event, { tx }) => {
          await tx.execute(sql`select 1`);
          started();
          await new Promise(() => undefined); // never ends, whatever its signal says
        },
      },
    });
    consumer.start();
    const { key, value, headers } = toKafkaRecord(chatEvent(randomUUID(), 1));
    await producer.send({ topic: 'chat.events', acks: -1, messages: [{ key, value, headers }] });
    await running;
    // Two stops at once (a service's close and a test's cleanup, say): both return.
    await Promise.all([consumer.stop(), consumer.stop()]);
    await pool.end();
  }, 30_000);
});
