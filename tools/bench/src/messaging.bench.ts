/**
 * Messaging benchmark (issue 3): relay throughput and publish-to-handled latency.
 *
 *   npm run bench:messaging -w @vivier/bench
 *
 * Starts its own test infrastructure (fresh database, dev Kafka broker), so it touches nothing else.
 * - Relay throughput: N committed outbox rows drained to Kafka by the relay (events/s), against
 *   a baseline of the same records sent by a bare kafkajs producer in batches of the same size.
 * - Latency at a fixed rate: events committed at 1,000/s for 10 s; each is handled by the
 *   consumer runner (validation + processed-event record + effect in one transaction); latency
 *   is from the publishing transaction's commit to the handler's commit.
 */
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { Registry } from 'prom-client';
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import type { FastifyBaseLogger } from 'fastify';
import { allTopics, createEvent, EVENTS, toKafkaRecord, type AnyEvent } from '@vivier/contracts';
import { startDevKafka } from '@vivier/dev-kafka';
import { createKafka, createProducer, createPublisher, EventConsumer, MessagingMetrics, OutboxRelay } from '@vivier/messaging';
import { createTestSchema } from '@vivier/messaging/testing';
import { startTestInfrastructure } from '@vivier/dev-stack/test-infra';
import { machineNote, median, percentile, round, writeSection } from './stats';

const logger = pino({ level: 'silent' }) as unknown as FastifyBaseLogger;
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const EVENTS_PER_ROUND = Number(process.env.EVENTS ?? 20_000);
const RATE = Number(process.env.RATE ?? 1000);
const SECONDS = Number(process.env.SECONDS ?? 10);

function event(chatId: string, i: number): AnyEvent {
  return createEvent(EVENTS.chatMessageCreated, {
    chatId,
    userId: chatId,
    messageId: randomUUID(),
    content: `message ${i}`,
    attachmentIds: [],
    model: 'sim/fast',
    createdAt: new Date().toISOString(),
  });
}

async function main(): Promise<void> {
  const infra = await startTestInfrastructure();
  Object.assign(process.env, infra.env);
  const topics = allTopics().map((t) => ({ name: t.name, partitions: t.partitions }));
  let dev = await startDevKafka({ topics });
  let kafka = createKafka({ KAFKA_BROKERS: dev.bootstrap.join(','), KAFKA_CLIENT_ID: 'bench', KAFKA_LOG_LEVEL: 'nothing' }, 'bench', logger);
  const ts = await createTestSchema(infra.env.VIVIER_TEST_DATABASE_ADMIN_URL!);
  const publish = createPublisher(ts.tables.outbox);
  const chats = Array.from({ length: 64 }, () => randomUUID());
  const relayRates: number[] = [];
  const rawRates: number[] = [];

  try {
    for (let round_ = 0; round_ < ROUNDS; round_++) {
      // Baseline: the same records straight from a producer, no database.
      const events = Array.from({ length: EVENTS_PER_ROUND }, (_, i) => event(chats[i % chats.length]!, i));
      const records = events.map(toKafkaRecord);
      const raw = createProducer(kafka, false);
      await raw.connect();
      let started = performance.now();
      for (let i = 0; i < records.length; i += 500) {
        const slice = records.slice(i, i + 500);
        await raw.sendBatch({ acks: -1, topicMessages: [{ topic: 'chat.events', messages: slice.map(({ key, value, headers }) => ({ key, value, headers })) }] });
      }
      rawRates.push(EVENTS_PER_ROUND / ((performance.now() - started) / 1000));
      await raw.disconnect();

      // The relay draining the same number of committed rows.
      for (let i = 0; i < events.length; i += 1000) await ts.db.transaction((tx) => publish(tx, events.slice(i, i + 1000).map((e) => ({ ...e, id: randomUUID() }))));
      const producer = createProducer(kafka, false);
      const relay = new OutboxRelay({ pool: ts.pool, schema: ts.schema, producer, logger, batchSize: 500, pollIntervalMs: 50 });
      started = performance.now();
      relay.start();
      for (;;) {
        const { rows } = await ts.pool.query(`select count(*)::int as n from "${ts.schema}".outbox where published_at is null`);
        if (rows[0].n === 0) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      relayRates.push(EVENTS_PER_ROUND / ((performance.now() - started) / 1000));
      await relay.stop();
      await producer.disconnect();
      process.stdout.write(`round ${round_ + 1}: relay ${round(relayRates.at(-1)!, 0)} events/s, raw producer ${round(rawRates.at(-1)!, 0)} events/s\n`);
    }

    // Consumer throughput: N records produced straight to a fresh broker, drained by a group from
    // the beginning, one transaction per event vs runs of up to 100 per transaction.
    const consumerRates: Record<string, number> = {};
    for (const [mode, applyInRuns] of [['one transaction per event', false], ['runs (applyInRuns)', true]] as const) {
      await dev.stop();
      dev = await startDevKafka({ topics });
      kafka = createKafka({ KAFKA_BROKERS: dev.bootstrap.join(','), KAFKA_CLIENT_ID: 'bench', KAFKA_LOG_LEVEL: 'nothing' }, 'bench', logger);
      const producer = createProducer(kafka, false);
      await producer.connect();
      const records = Array.from({ length: EVENTS_PER_ROUND }, (_, i) => toKafkaRecord(event(chats[i % chats.length]!, i)));
      for (let i = 0; i < records.length; i += 500) {
        await producer.sendBatch({ acks: -1, topicMessages: [{ topic: 'chat.events', messages: records.slice(i, i + 500).map(({ key, value, headers }) => ({ key, value, headers })) }] });
      }
      let handled = 0;
      let t0 = 0;
      const c = new EventConsumer({
        kafka,
        producer,
        group: 'worker',
        topics: ['chat.events'],
        db: ts.db,
        processedEvents: ts.tables.processedEvents,
        logger,
        applyInRuns,
        maxWaitTimeMs: 100,
        sessionTimeoutMs: 6000,
        handlers: {
          'vivier.chat.message.created.v1': async () => {
            if (handled === 0) t0 = performance.now();
            handled += 1;
          },
        },
      });
      c.start();
      const deadline = Date.now() + 300_000;
      while (handled < records.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      consumerRates[mode] = handled / ((performance.now() - t0) / 1000);
      await c.stop();
      await producer.disconnect();
      process.stdout.write(`consumer ${mode}: ${round(consumerRates[mode]!, 0)} events/s (${handled} of ${records.length})\n`);
    }

    // Latency at a steady rate through relay and consumer, on a fresh broker (empty topics).
    await dev.stop();
    dev = await startDevKafka({ topics });
    kafka = createKafka({ KAFKA_BROKERS: dev.bootstrap.join(','), KAFKA_CLIENT_ID: 'bench', KAFKA_LOG_LEVEL: 'nothing' }, 'bench', logger);
    await ts.pool.query(`create table "${ts.schema}".effects (event_id uuid primary key)`);
    const committedAt = new Map<string, number>();
    const latencies: number[] = [];
    const producer = createProducer(kafka, false);
    const relay = new OutboxRelay({ pool: ts.pool, schema: ts.schema, producer, logger, pollIntervalMs: 1000, metrics: new MessagingMetrics(new Registry()) });
    const consumer = new EventConsumer({
      kafka,
      producer,
      group: 'worker',
      topics: ['chat.events'],
      db: ts.db,
      processedEvents: ts.tables.processedEvents,
      logger,
      applyInRuns: process.env.LATENCY_RUNS !== '0',
      sessionTimeoutMs: 10_000,
      // The mock broker holds every fetch for the whole wait (a real broker answers as soon as
      // data arrives), so the wait is kept short here to measure the platform, not the mock.
      maxWaitTimeMs: Number(process.env.MAX_WAIT_MS ?? 20),
      handlers: {
        'vivier.chat.message.created.v1': async (e, { tx }) => {
          await tx.execute(sql`insert into ${sql.identifier(ts.schema)}.effects (event_id) values (${e.id})`);
        },
      },
    });
    await ts.pool.query(`delete from "${ts.schema}".outbox`);
    relay.start();
    consumer.start();
    // Timing starts once the group has formed: a warm-up event must have been handled (the dev
    // broker holds the first rebalance for most of a session timeout).
    const warm = event(chats[0]!, -1);
    await ts.db.transaction((tx) => publish(tx, warm));
    const joinDeadline = Date.now() + 60_000;
    while ((await ts.pool.query(`select 1 from "${ts.schema}".processed_events where event_id = $1`, [warm.id])).rows.length === 0) {
      if (Date.now() > joinDeadline) throw new Error('the consumer group did not form within 60 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    const poll = setInterval(async () => {
      const { rows } = await ts.pool.query<{ event_id: string; at: Date }>(
        `select p.event_id, p.processed_at as at from "${ts.schema}".processed_events p where p.consumer_group = 'worker' and p.processed_at > now() - interval '5 seconds'`,
      );
      for (const row of rows) {
        const at = committedAt.get(row.event_id);
        if (at !== undefined) {
          latencies.push(row.at.getTime() - at);
          committedAt.delete(row.event_id);
        }
      }
    }, 200);
    // The writers are another service's pool: sharing the consumer's 8 connections with 16
    // writers would measure pool queueing, not the event path.
    const writerPool = new pg.Pool({ connectionString: infra.env.VIVIER_TEST_DATABASE_ADMIN_URL!, max: 16 });
    const writers = drizzle(writerPool);
    const total = RATE * SECONDS;
    const start = performance.now();
    const workers = 16;
    let sent = 0;
    await Promise.all(
      Array.from({ length: workers }, async (_, w) => {
        for (let i = w; i < total; i += workers) {
          const due = start + (i / RATE) * 1000;
          const wait = due - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          const e = event(chats[i % chats.length]!, i);
          await writers.transaction((tx) => publish(tx, e));
          committedAt.set(e.id, Date.now());
          sent += 1;
        }
      }),
    );
    const achievedRate = sent / ((performance.now() - start) / 1000);
    const deadline = Date.now() + 30_000;
    while (committedAt.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    clearInterval(poll);
    await writerPool.end();
    await consumer.stop();
    await relay.stop();
    await producer.disconnect();

    const relayLag = await ts.pool.query(
      `select percentile_cont(0.5) within group (order by extract(epoch from published_at - created_at)) * 1000 as p50,
              percentile_cont(0.99) within group (order by extract(epoch from published_at - created_at)) * 1000 as p99
         from "${ts.schema}".outbox`,
    );
    process.stdout.write(`relay: insert-to-published p50 ${round(relayLag.rows[0].p50)} ms, p99 ${round(relayLag.rows[0].p99)} ms\n`);
    const consumerLag = await ts.pool.query(
      `select percentile_cont(0.5) within group (order by extract(epoch from p.processed_at - o.published_at)) * 1000 as p50,
              percentile_cont(0.99) within group (order by extract(epoch from p.processed_at - o.published_at)) * 1000 as p99
         from "${ts.schema}".outbox o join "${ts.schema}".processed_events p on p.event_id = o.event_id and p.consumer_group = 'worker'`,
    );
    process.stdout.write(`consumer: published-to-handled p50 ${round(consumerLag.rows[0].p50)} ms, p99 ${round(consumerLag.rows[0].p99)} ms\n`);
    const p50 = percentile(latencies, 50);
    const p99 = percentile(latencies, 99);
    process.stdout.write(`latency at ${round(achievedRate, 0)} events/s: p50 ${p50} ms, p99 ${p99} ms over ${latencies.length} events (${committedAt.size} unseen)\n`);

    await writeSection(
      'messaging',
      `## Messaging: outbox relay and consumers (issue 3)

Command: \`npm run bench:messaging -w @vivier/bench\` (${machineNote()}; dev Kafka broker = librdkafka mock cluster, 1 broker, 4 partitions; PostgreSQL 15 local).

| measure | result | target |
| --- | --- | --- |
| relay throughput, ${EVENTS_PER_ROUND.toLocaleString('en')} committed rows → Kafka (median of ${ROUNDS}) | **${round(median(relayRates), 0).toLocaleString('en')} events/s** | ≥ 5,000 events/s |
| baseline: bare kafkajs producer, same records, same batch size (median) | ${round(median(rawRates), 0).toLocaleString('en')} events/s | — |
| relay / bare producer | ${round(median(relayRates) / median(rawRates), 2)}× | — |
| consumer, one transaction per event (validate + processed-event record + effect) | ${round(consumerRates['one transaction per event']!, 0).toLocaleString('en')} events/s | — |
| consumer, runs of up to 100 events per transaction (\`applyInRuns\`, read models) | ${round(consumerRates['runs (applyInRuns)']!, 0).toLocaleString('en')} events/s | — |
| publish-to-handled latency at ${round(achievedRate, 0)} events/s for ${SECONDS} s (${process.env.LATENCY_RUNS !== '0' ? 'runs' : 'one transaction per event'}), p50 | **${p50} ms** | — |
| publish-to-handled latency, p99 | **${p99} ms** | < 50 ms |

Latency runs from the publishing transaction's commit to the start of the consumer's transaction
that applies the effect and records the event id (processed_at) (NOTIFY wakes the relay; the consumer's fetch wait is ${process.env.MAX_WAIT_MS ?? 20} ms because the mock broker holds each fetch for the full wait).
Rounds: relay ${relayRates.map((r) => round(r, 0)).join(', ')}; producer ${rawRates.map((r) => round(r, 0)).join(', ')} events/s.
${latencies.length} events measured, ${committedAt.size} not seen within 30 s.
Split: the relay's insert-to-published p50 ${round(relayLag.rows[0].p50)} ms / p99 ${round(relayLag.rows[0].p99)} ms; the consumer's published-to-handled p50 ${round(consumerLag.rows[0].p50)} ms / p99 ${round(consumerLag.rows[0].p99)} ms.
**Open finding**: the time is lost after the relay, between the broker and the consumer. Bare kafkajs against the same dev broker
at 1,000 events/s (10 per send, 100 keys) delivers with p50 11 ms / p99 22 ms, and \`EventConsumer\` keeps p50 15 ms / p99 98 ms
at 300 events/s, but falls behind between 300 and 600 events/s: small batches (≈ 3 records) each pay a database transaction
and an offset commit. Committing offsets every 100 ms instead of per batch did not change it. The cause is the dev broker:
librdkafka's mock cluster answers a Fetch with **one** record batch per partition (\`rdkafka_mock_handlers.c\`, "FIXME: Multiple
messageSets ?"), so a consumer gets one producer request's worth of records per partition per round trip, however far behind it
is; with the relay sending a few records per request at this rate, that caps the group at a few hundred events/s. A real Kafka
returns every batch up to \`maxBytes\` in one fetch (the bulk drain above, 24k events/s, is what a backlog costs then). Not a
target met: to be measured against a real broker (compose) before this is called done.`,
    );
  } finally {
    await ts.drop();
    await dev.stop();
    await infra.stop();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
