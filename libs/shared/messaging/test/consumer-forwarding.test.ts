import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Kafka } from 'kafkajs';
import { toKafkaRecord } from '@vivier/contracts';
import { testAdminDatabaseUrl } from '@vivier/service-kit/testing';
import type { DevKafka } from '@vivier/dev-kafka';
import { createProducer } from '../src/kafka';
import type { EventProducer } from '../src/producer';
import { createTestSchema, type TestSchema } from '../src/testing';
import { chatEvent, startBroker, testConsumer } from './helpers';

// A handler failed and its record is to go to the retry topic, but Kafka refuses the write. On a
// broker of its own: the test makes the broker refuse writes.
let dev: DevKafka;
let kafka: Kafka;
let ts: TestSchema;
let producer: EventProducer;

beforeAll(async () => {
  ({ dev, kafka } = await startBroker());
  ts = await createTestSchema(testAdminDatabaseUrl());
  producer = createProducer(kafka, false);
  await producer.connect();
});
afterAll(async () => {
  await producer?.disconnect();
  await ts?.drop();
  await dev?.stop();
});

const PRODUCE = 0;
const MESSAGE_TOO_LARGE = 10; // not retriable: kafkajs gives up on the send at once

describe('passing a failed record on', () => {
  it('tries the record again in place when its retry record cannot be written, without crashing the consumer or rebalancing its group', async () => {
    const event = chatEvent(randomUUID(), 1);
    const attempts: number[] = [];
    const consumer = testConsumer({ kafka, producer, ts }, 'admin', {
      handlers: {
        'vivier.chat.message.created.v1': async (e, { attempt }) => {
          if (e.id !== event.id) return;
          attempts.push(attempt);
          // The next two writes to Kafka (the retry records of this failure and the next) fail.
          if (attempts.length === 1) await dev.pushRequestErrors(PRODUCE, MESSAGE_TOO_LARGE, 2);
          if (attempt === 1) throw new Error('fails on its first attempt');
        },
      },
      retry: { attempts: 3, initialDelayMs: 100, maxDelayMs: 100 },
      stopTimeoutMs: 60_000,
    });
    consumer.start();
    try {
      const { key, value, headers } = toKafkaRecord(event);
      await producer.send({ topic: 'chat.events', acks: -1, messages: [{ key, value, headers }] });
      await expect.poll(() => attempts, { timeout: 40_000, interval: 50 }).toEqual([1, 1, 1, 2]);
      // Before, the failed write crashed the consumer: a new one joined, and the group rebalanced.
      expect(consumer.stats).toEqual({ joins: 1, crashes: 0 });
    } finally {
      await consumer.stop();
    }
  }, 60_000);
});
