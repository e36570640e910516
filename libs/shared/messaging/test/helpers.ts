import { randomUUID } from 'node:crypto';
import pino from 'pino';
import type { Consumer, Kafka } from 'kafkajs';
import type { FastifyBaseLogger } from 'fastify';
import { allTopics, createEvent, EVENTS, type AnyEvent } from '@vivier/contracts';
import { startDevKafka, type DevKafka } from '@vivier/dev-kafka';
import { Registry } from 'prom-client';
import { createKafka } from '../src/kafka';
import { EventConsumer, type EventConsumerOptions } from '../src/consumer';
import { MessagingMetrics } from '../src/metrics';
import type { EventProducer } from '../src/producer';
import type { TestSchema } from '../src/testing';

export const silentLogger = pino({ level: process.env.VIVIER_TEST_LOG_LEVEL ?? 'silent' }) as unknown as FastifyBaseLogger;

export async function startBroker(brokers = 1): Promise<{ dev: DevKafka; kafka: Kafka }> {
  const dev = await startDevKafka({ brokers, topics: allTopics().map((t) => ({ name: t.name, partitions: t.partitions })) });
  const kafka = createKafka({ KAFKA_BROKERS: dev.bootstrap.join(','), KAFKA_CLIENT_ID: 'test', KAFKA_LOG_LEVEL: 'nothing' }, 'messaging-test', silentLogger);
  return { dev, kafka };
}

/** A `chat.message.created` event whose content carries a sequence number, keyed by chat id. */
export function chatEvent(chatId: string, seq: number, extra = ''): AnyEvent {
  return createEvent(EVENTS.chatMessageCreated, {
    chatId,
    userId: randomUUID(),
    messageId: randomUUID(),
    content: JSON.stringify({ seq, extra }),
    attachmentIds: [],
    model: 'sim/fast',
    createdAt: new Date().toISOString(),
  });
}

export function seqOf(event: AnyEvent): number {
  return (JSON.parse((event.data as { content: string }).content) as { seq: number }).seq;
}

/** Collects every record of the given topics, as a plain consumer outside any tested code. */
export async function collect(kafka: Kafka, topics: string[]): Promise<{ records: Array<{ topic: string; key: string; value: string; headers: Record<string, string> }>; stop(): Promise<void>; consumer: Consumer }> {
  const records: Array<{ topic: string; key: string; value: string; headers: Record<string, string> }> = [];
  const consumer = kafka.consumer({ groupId: `collector-${randomUUID()}`, sessionTimeout: 6000, heartbeatInterval: 500, maxWaitTimeInMs: 100 });
  const joined = new Promise<void>((resolve) => consumer.on(consumer.events.GROUP_JOIN, () => resolve()));
  await consumer.connect();
  await consumer.subscribe({ topics, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ topic, message }) => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(message.headers ?? {})) if (v !== undefined) headers[k] = (Array.isArray(v) ? v[0] : v)!.toString();
      records.push({ topic, key: message.key?.toString() ?? '', value: message.value?.toString() ?? '', headers });
    },
  });
  await joined;
  return { records, consumer, stop: () => consumer.disconnect() };
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * An EventConsumer on chat.events with the settings of the broker-level tests (a 6 s session, as
 * the dev broker holds rebalances for a session; fast heartbeats and fetches); `overrides` on top.
 */
export function testConsumer(
  base: { kafka: Kafka; producer: EventProducer; ts: TestSchema },
  group: EventConsumerOptions['group'],
  overrides: Partial<EventConsumerOptions> = {},
): EventConsumer {
  return new EventConsumer({
    kafka: base.kafka,
    producer: base.producer,
    group,
    topics: ['chat.events'],
    handlers: { 'vivier.chat.message.created.v1': async () => undefined },
    db: base.ts.db,
    processedEvents: base.ts.tables.processedEvents,
    logger: silentLogger,
    metrics: new MessagingMetrics(new Registry()),
    sessionTimeoutMs: 6000,
    heartbeatIntervalMs: 500,
    maxWaitTimeMs: 200,
    ...overrides,
  });
}
