import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Kafka } from 'kafkajs';
import pg from 'pg';
import { Registry } from 'prom-client';
import { testAdminDatabaseUrl } from '@vivier/service-kit/testing';
import type { DevKafka } from '@vivier/dev-kafka';
import { createProducer } from '../src/kafka';
import type { EventProducer } from '../src/producer';
import { createPublisher } from '../src/publish';
import { OutboxRelay } from '../src/relay';
import { MessagingMetrics } from '../src/metrics';
import { deleteInBatches, messagingHousekeeping, type HousekeepingTask } from '../src/housekeeping';
import { createTestSchema, type TestSchema } from '../src/testing';
import { chatEvent, collect, seqOf, silentLogger, sleep, startBroker } from './helpers';

let dev: DevKafka;
let kafka: Kafka;
let ts: TestSchema;
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  ({ dev, kafka } = await startBroker());
  ts = await createTestSchema(testAdminDatabaseUrl());
});
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});
afterAll(async () => {
  await ts?.drop();
  await dev?.stop();
});

function relay(overrides: Partial<ConstructorParameters<typeof OutboxRelay>[0]> = {}): { relay: OutboxRelay; producer: EventProducer; metrics: MessagingMetrics } {
  const producer = createProducer(kafka, false);
  const metrics = new MessagingMetrics(new Registry());
  const r = new OutboxRelay({ pool: ts.pool, schema: ts.schema, producer, logger: silentLogger, metrics, pollIntervalMs: 60_000, ...overrides });
  cleanups.push(async () => {
    await r.stop();
    await producer.disconnect();
  });
  return { relay: r, producer, metrics };
}

/** A sink on chat.events, and a relay polling every 20 ms that has become the leader. */
async function pollingLeaderWithSink() {
  const sink = await collect(kafka, ['chat.events']);
  cleanups.push(() => sink.stop());
  const { relay: r } = relay({ pollIntervalMs: 20 });
  r.start();
  await expect.poll(() => r.isLeader, { timeout: 10_000 }).toBe(true);
  return sink;
}

const publish = () => createPublisher(ts.tables.outbox);

/**
 * The test schema's pool, except that every query on a connection it hands out (the relay's
 * leader connection among them) is followed by `after(client, text, result)`, which the query's
 * caller waits for.
 */
function poolWatching(after: (client: pg.PoolClient, text: string, result: pg.QueryResult) => Promise<void> | void): pg.Pool {
  return new Proxy(ts.pool, {
    get(target, prop) {
      if (prop === 'connect') {
        return async () => {
          const client = await target.connect();
          const query = client.query.bind(client) as (...args: unknown[]) => Promise<pg.QueryResult>;
          client.query = (async (...args: unknown[]) => {
            const result = await query(...args);
            await after(client, typeof args[0] === 'string' ? args[0] : '', result);
            return result;
          }) as typeof client.query;
          return client;
        };
      }
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}
/** An outbox row written on a connection the test holds (a transaction it keeps open). */
const insertOn = (client: pg.PoolClient, event: ReturnType<typeof chatEvent>) =>
  client.query(`insert into "${ts.schema}".outbox (event_id, topic, key, envelope, headers) values ($1, 'chat.events', $2, $3, '{}')`, [
    event.id,
    (event.data as { chatId: string }).chatId,
    JSON.stringify(event),
  ]);
const idsOf = (records: Array<{ value: string }>) => records.map((r) => (JSON.parse(r.value) as { id: string }).id);

/**
 * A leader that lingers a minute after each send, right after it sent one event: the event is on
 * Kafka, and only the next read (a minute away), or stop(), would mark it. `marked` reads its
 * `published_at`.
 */
async function lingeringAfterSend() {
  const chatId = randomUUID();
  const sink = await collect(kafka, ['chat.events']);
  cleanups.push(() => sink.stop());
  const { relay: r } = relay({ lingerMs: 60_000 });
  r.start();
  await expect.poll(() => r.isLeader, { timeout: 10_000 }).toBe(true);
  const event = chatEvent(chatId, 1);
  await ts.db.transaction((tx) => publish()(tx, event));
  await expect.poll(() => idsOf(sink.records.filter((rec) => rec.key === chatId)), { timeout: 10_000, interval: 10 }).toEqual([event.id]);
  const marked = async (): Promise<Date | null> =>
    (await ts.pool.query(`select published_at from "${ts.schema}".outbox where event_id = $1`, [event.id])).rows[0].published_at;
  return { relay: r, marked };
}

/** A "purge" that always finds a full batch, so only a stop (or the lead let go) ends it; `batches` counts its statements. */
function endlessPurge(): { task: HousekeepingTask; batches: () => number } {
  let batches = 0;
  const task: HousekeepingTask = {
    name: 'endless-purge',
    run: async (client, stopping) => {
      const counted = {
        query: (text: string, params: unknown[]) => {
          batches += 1;
          return client.query(text, params);
        },
      } as unknown as pg.ClientBase;
      return { rows: await deleteInBatches(counted, 'select n from generate_series(1, $1::int) n', [], stopping) };
    },
  };
  return { task, batches: () => batches };
}

describe('outbox relay', () => {
  it('publishes only committed events, wakes on NOTIFY within milliseconds, and marks them sent', async () => {
    const chatId = randomUUID();
    const sink = await collect(kafka, ['chat.events']);
    cleanups.push(() => sink.stop());
    const { relay: r } = relay();
    r.start();
    await expect.poll(() => r.isLeader, { timeout: 10_000 }).toBe(true);

    const rolledBack = chatEvent(chatId, 0);
    await ts.db.transaction(async (tx) => {
      await publish()(tx, rolledBack);
      tx.rollback();
    }).catch(() => undefined);

    const event = chatEvent(chatId, 1);
    await ts.db.transaction((tx) => publish()(tx, event));
    const committedAt = Date.now();
    // The poll interval is a minute: only NOTIFY can get it published this soon (milliseconds
    // here; the bound leaves room for transactions that tests running meanwhile keep open, since a
    // relay publishes only below the oldest one on the server).
    await expect
      .poll(async () => (await ts.pool.query(`select published_at from "${ts.schema}".outbox where event_id = $1`, [event.id])).rows[0].published_at, { timeout: 10_000, interval: 10 })
      .not.toBeNull();
    expect(Date.now() - committedAt).toBeLessThan(10_000);
    await expect.poll(() => sink.records.filter((r) => r.key === chatId).length, { timeout: 10_000, interval: 20 }).toBe(1);
    const record = sink.records.find((r) => r.key === chatId)!;
    expect(JSON.parse(record.value)).toMatchObject({ id: event.id, type: 'vivier.chat.message.created.v1', specversion: '1.0' });
    expect(record.headers['content-type']).toBe('application/cloudevents+json');
    expect(idsOf(sink.records)).not.toContain(rolledBack.id);
    const { rows } = await ts.pool.query(`select published_at from "${ts.schema}".outbox where event_id = $1`, [event.id]);
    expect(rows[0].published_at).not.toBeNull();
  });

  it('keeps a NOTIFY that arrives while a pass runs: the row is published without waiting for the poll', async () => {
    const chatId = randomUUID();
    const late = chatEvent(chatId, 1);
    // The leader's connection, as the relay gets it from the pool: once armed, after a pass has
    // read nothing, an event commits and its NOTIFY reaches the connection before the pass
    // returns, too late for that pass to see the row.
    let passes = 0;
    let armed = false;
    const pool = poolWatching(async (client, text, result) => {
      if (!text.includes('pg_snapshot_xmin')) return;
      passes += 1;
      const empty = result.rows.every((r: { id: unknown; waiting: number }) => r.id === null && r.waiting === 0);
      if (armed && empty) {
        armed = false;
        const notified = new Promise((resolve) => client.once('notification', resolve));
        await ts.db.transaction((tx) => publish()(tx, late));
        await notified;
      }
    });
    const sink = await collect(kafka, ['chat.events']);
    cleanups.push(() => sink.stop());
    const { relay: r } = relay({ pool }); // polls once a minute
    r.start();
    await expect.poll(() => r.isLeader, { timeout: 10_000 }).toBe(true);
    await expect.poll(() => passes, { timeout: 10_000 }).toBeGreaterThan(0); // its first pass is over
    await sleep(100);
    armed = true;
    r.poke();
    await expect.poll(() => armed, { timeout: 5000 }).toBe(false);
    await expect.poll(() => idsOf(sink.records.filter((rec) => rec.key === chatId)), { timeout: 10_000, interval: 20 }).toEqual([late.id]);
  });

  it('counts its backlog and marks what it sent in the statement that reads: an event that comes alone costs two reads and nothing else', async () => {
    const chatId = randomUUID();
    // Every statement the leader's connection runs: 'pass' for the read, else its first words.
    const statements: string[] = [];
    const pool = poolWatching((_client, text) => {
      statements.push(text.includes('pg_snapshot_xmin') ? 'pass' : text.trim().split(/\s+/).slice(0, 2).join(' '));
    });
    const sink = await collect(kafka, ['chat.events']);
    cleanups.push(() => sink.stop());
    const { relay: r, metrics } = relay({ pool });
    r.start();
    await expect.poll(() => statements.includes('pass'), { timeout: 10_000 }).toBe(true);
    await sleep(100);
    const from = statements.length;
    const events = [chatEvent(chatId, 1), chatEvent(chatId, 2), chatEvent(chatId, 3)];
    for (const event of events) {
      await ts.db.transaction((tx) => publish()(tx, event));
      await expect.poll(() => idsOf(sink.records.filter((rec) => rec.key === chatId)).includes(event.id), { timeout: 10_000, interval: 10 }).toBe(true);
      // The linger, then the pass that marks it and finds nothing else.
      await expect
        .poll(async () => (await ts.pool.query(`select published_at from "${ts.schema}".outbox where event_id = $1`, [event.id])).rows[0].published_at, { timeout: 10_000, interval: 10 })
        .not.toBeNull();
      await sleep(100);
    }
    // The read that sent an event, and the next one, which marked it: no mark or count of its own.
    // (More reads when a transaction open elsewhere held the event back for a while.)
    expect(statements.slice(from).filter((s) => s !== 'pass')).toEqual([]);
    expect(statements.slice(from).length).toBeGreaterThanOrEqual(6);
    expect((await metrics.outboxBacklog.get()).values.find((v) => v.labels.schema === ts.schema)?.value).toBe(0);
  });

  it('sends every row once when the marks go with the next read, also batch after full batch', async () => {
    const chatId = randomUUID();
    const events = Array.from({ length: 23 }, (_, i) => chatEvent(chatId, i));
    await ts.db.transaction((tx) => publish()(tx, events));
    const sink = await collect(kafka, ['chat.events']);
    cleanups.push(() => sink.stop());
    // Full batches of 5: the floor stays put, so each read must leave out the rows it marks.
    const { relay: r } = relay({ batchSize: 5 });
    r.start();
    await expect.poll(() => sink.records.filter((rec) => rec.key === chatId).length, { timeout: 15_000 }).toBe(23);
    await sleep(300);
    expect(sink.records.filter((rec) => rec.key === chatId).map((rec) => seqOf(JSON.parse(rec.value)))).toEqual(events.map((_, i) => i));
    const { rows } = await ts.pool.query(`select count(*)::int as n from "${ts.schema}".outbox where key = $1 and published_at is null`, [chatId]);
    expect(rows[0].n).toBe(0);
  });

  it('sends large events in several requests, none over its byte cap, in order: a broker refuses a record batch over its limit for good', async () => {
    const chatId = randomUUID();
    // Three events of about 300 KB: together over the default cap of 512 KiB, each under it.
    const events = Array.from({ length: 3 }, (_, i) => chatEvent(chatId, i, 'x'.repeat(300_000)));
    await ts.db.transaction((tx) => publish()(tx, events));
    const sink = await collect(kafka, ['chat.events']);
    cleanups.push(() => sink.stop());
    const { relay: r, metrics } = relay();
    r.start();
    await expect.poll(() => sink.records.filter((rec) => rec.key === chatId).length, { timeout: 15_000 }).toBe(3);
    expect(sink.records.filter((rec) => rec.key === chatId).map((rec) => seqOf(JSON.parse(rec.value)))).toEqual([0, 1, 2]);
    const sends = (await metrics.publishDuration.get()).values.find((v) => v.metricName === 'vivier_outbox_publish_duration_seconds_count')?.value;
    expect(sends).toBe(3);
  });

  it('marks what it last sent when it stops, however long it would have lingered', async () => {
    const { relay: r, marked } = await lingeringAfterSend();
    await sleep(200);
    expect(await marked()).toBeNull(); // lingering: the next read would mark it
    const stopping = Date.now();
    await r.stop();
    expect(Date.now() - stopping).toBeLessThan(5000);
    expect(await marked()).not.toBeNull();
  });

  it('marks what it last sent on another connection when its own was cut, so the next leader does not send it again', async () => {
    const { relay: r, marked } = await lingeringAfterSend();
    // The leader's backend goes away while the relay lingers (its connection emits an error no
    // query is waiting for, which must not take the process down).
    const { rows: killed } = await ts.pool.query<{ ok: boolean }>(
      `select pg_terminate_backend(pid) as ok from pg_stat_activity where query like '%pg_snapshot_xmin%' and query like $1 and pid <> pg_backend_pid()`,
      [`%"${ts.schema}"."outbox"%`],
    );
    expect(killed.map((k) => k.ok)).toEqual([true]);
    await sleep(200);
    await r.stop();
    expect(await marked()).not.toBeNull();
  });

  it('hands its connection back to the pool without the listeners it added, however often it leads', async () => {
    const single = new pg.Pool({ connectionString: testAdminDatabaseUrl(), max: 1 });
    single.on('error', () => undefined);
    cleanups.push(() => single.end());
    const listeners = async () => {
      const client = await single.connect();
      try {
        return { notification: client.listenerCount('notification'), error: client.listenerCount('error') };
      } finally {
        client.release();
      }
    };
    const before = await listeners();
    for (let i = 0; i < 3; i++) {
      const { relay: r } = relay({ pool: single });
      r.start();
      await expect.poll(() => r.isLeader, { timeout: 10_000 }).toBe(true);
      await r.stop();
    }
    expect(await listeners()).toEqual(before);
  });

  it('restarted before its stop() has finished, ends the old loop and runs one new one', async () => {
    const chatId = randomUUID();
    const sink = await collect(kafka, ['chat.events']);
    cleanups.push(() => sink.stop());
    const { relay: r } = relay({ pollIntervalMs: 20 });
    r.start();
    await expect.poll(() => r.isLeader, { timeout: 10_000 }).toBe(true);
    const stopping = r.stop();
    r.start();
    // The old loop saw `running` true again and went on: this stop() then waited for the next one.
    const outcome = await Promise.race([stopping.then(() => 'stopped'), sleep(5000).then(() => 'still waiting')]);
    expect(outcome).toBe('stopped');
    await expect.poll(() => r.isLeader, { timeout: 10_000 }).toBe(true);
    const events = Array.from({ length: 20 }, (_, i) => chatEvent(chatId, i));
    for (const event of events) await ts.db.transaction((tx) => publish()(tx, event));
    await expect.poll(() => sink.records.filter((rec) => rec.key === chatId).length, { timeout: 10_000 }).toBe(20);
    await sleep(300);
    expect(sink.records.filter((rec) => rec.key === chatId).map((rec) => seqOf(JSON.parse(rec.value)))).toEqual(events.map((_, i) => i));
  });

  it('delivers events committed while no relay ran (the service stopped before publishing) once it starts again', async () => {
    const chatId = randomUUID();
    const events = Array.from({ length: 50 }, (_, i) => chatEvent(chatId, i));
    await ts.db.transaction((tx) => publish()(tx, events));
    const sink = await collect(kafka, ['chat.events']);
    cleanups.push(() => sink.stop());
    await sleep(500);
    expect(sink.records.filter((r) => r.key === chatId)).toHaveLength(0);

    const { relay: restarted } = relay();
    restarted.start();
    await expect.poll(() => sink.records.filter((r) => r.key === chatId).length, { timeout: 15_000 }).toBe(50);
    const seqs = sink.records.filter((r) => r.key === chatId).map((r) => seqOf(JSON.parse(r.value)));
    expect(seqs).toEqual(events.map((_, i) => i));
  });

  it('never lets a later-committing transaction be overtaken by a newer row of the same key', async () => {
    const chatId = randomUUID();
    const sink = await pollingLeaderWithSink();

    const slow = await ts.pool.connect();
    try {
      await slow.query('begin');
      const first = chatEvent(chatId, 1);
      const second = chatEvent(chatId, 2);
      // The first event gets the lower id but its transaction commits last.
      await insertOn(slow, first);
      await ts.db.transaction((tx) => publish()(tx, second));
      await sleep(800);
      expect(sink.records.filter((rec) => rec.key === chatId)).toHaveLength(0);
      await slow.query('commit');
      await expect.poll(() => sink.records.filter((rec) => rec.key === chatId).length, { timeout: 10_000 }).toBe(2);
      expect(sink.records.filter((rec) => rec.key === chatId).map((rec) => seqOf(JSON.parse(rec.value)))).toEqual([1, 2]);
    } finally {
      slow.release();
    }
  });

  it('publishes the event of a transaction that took its id before a pass and wrote the event after it', async () => {
    // The relay reads from the xmin of its last complete pass on; a transaction that already had
    // an id then (here: it wrote elsewhere first) must still be found when it writes its event.
    const chatId = randomUUID();
    const sink = await pollingLeaderWithSink();
    const early = await ts.pool.connect();
    try {
      await early.query('begin');
      await early.query('select pg_current_xact_id()');
      // Passes go on meanwhile, publishing the events of others (all of them newer transactions,
      // so held back until this one ends) and finding nothing older.
      await ts.db.transaction((tx) => publish()(tx, chatEvent(randomUUID(), 0)));
      await sleep(500);
      const late = chatEvent(chatId, 1);
      await insertOn(early, late);
      await early.query('commit');
      await expect.poll(() => sink.records.filter((rec) => rec.key === chatId).length, { timeout: 10_000 }).toBe(1);
    } finally {
      early.release();
    }
  });

  it('looks less and less often at rows a long transaction holds back, and publishes them once it ends', async () => {
    const chatId = randomUUID();
    let passes = 0;
    const pool = poolWatching((_client, text) => {
      if (text.includes('pg_snapshot_xmin')) passes += 1;
    });
    const sink = await collect(kafka, ['chat.events']);
    cleanups.push(() => sink.stop());
    const { relay: r } = relay({ pool, pollIntervalMs: 5000 });
    r.start();
    await expect.poll(() => r.isLeader, { timeout: 10_000 }).toBe(true);
    const long = await ts.pool.connect();
    try {
      // An older transaction with an id, open for a while (a slow job, a long report).
      await long.query('begin');
      await long.query('select pg_current_xact_id()');
      await ts.db.transaction((tx) => publish()(tx, chatEvent(chatId, 1)));
      await sleep(300);
      const from = passes;
      await sleep(1000);
      // 100 a second before (a pass every 10 ms); now at most about 10 once the waits reach 100 ms.
      expect(passes - from).toBeLessThanOrEqual(20);
      expect(sink.records.filter((rec) => rec.key === chatId)).toHaveLength(0);
      await long.query('commit');
      await expect.poll(() => sink.records.filter((rec) => rec.key === chatId).length, { timeout: 10_000, interval: 5 }).toBe(1);
    } finally {
      await long.query('rollback').catch(() => undefined);
      long.release();
    }
  });

  it('runs one active relay per schema; the standby takes over when the leader stops', async () => {
    const chatId = randomUUID();
    const sink = await collect(kafka, ['chat.events']);
    cleanups.push(() => sink.stop());
    const a = relay({ pollIntervalMs: 50 });
    const b = relay({ pollIntervalMs: 50 });
    a.relay.start();
    await expect.poll(() => a.relay.isLeader, { timeout: 10_000 }).toBe(true);
    b.relay.start();
    await sleep(300);
    expect(b.relay.isLeader).toBe(false);

    const batch1 = Array.from({ length: 100 }, (_, i) => chatEvent(chatId, i));
    for (const e of batch1) await ts.db.transaction((tx) => publish()(tx, e));
    await expect.poll(() => sink.records.filter((r) => r.key === chatId).length, { timeout: 15_000 }).toBe(100);

    await a.relay.stop();
    const batch2 = Array.from({ length: 100 }, (_, i) => chatEvent(chatId, 100 + i));
    await ts.db.transaction((tx) => publish()(tx, batch2));
    await expect.poll(() => b.relay.isLeader, { timeout: 10_000 }).toBe(true);
    await expect.poll(() => sink.records.filter((r) => r.key === chatId).length, { timeout: 15_000 }).toBe(200);
    const ids = idsOf(sink.records.filter((r) => r.key === chatId));
    expect(new Set(ids).size).toBe(200);
    expect(sink.records.filter((r) => r.key === chatId).map((r) => seqOf(JSON.parse(r.value)))).toEqual(Array.from({ length: 200 }, (_, i) => i));
  });

  it('keeps events in the outbox while Kafka is down, reports the backlog, and drains it when Kafka returns', async () => {
    const chatId = randomUUID();
    const sink = await collect(kafka, ['chat.events']);
    cleanups.push(() => sink.stop());
    const { relay: r, metrics } = relay({ pollIntervalMs: 50, maxBackoffMs: 500 });
    r.start();
    await expect.poll(() => r.isLeader, { timeout: 10_000 }).toBe(true);
    await dev.brokerDown(1);
    try {
      for (let i = 0; i < 30; i++) await ts.db.transaction((tx) => publish()(tx, chatEvent(chatId, i)));
      await expect.poll(() => r.lastError, { timeout: 20_000 }).toBeDefined();
      const { rows } = await ts.pool.query(`select count(*)::int as n from "${ts.schema}".outbox where published_at is null and key = $1`, [chatId]);
      expect(rows[0].n).toBe(30);
      await expect.poll(async () => (await metrics.outboxBacklog.get()).values[0]?.value ?? 0, { timeout: 10_000 }).toBeGreaterThanOrEqual(30);
    } finally {
      await dev.brokerUp(1);
    }
    await expect.poll(async () => (await ts.pool.query(`select count(*)::int as n from "${ts.schema}".outbox where published_at is null and key = $1`, [chatId])).rows[0].n, { timeout: 30_000 }).toBe(0);
    await expect.poll(() => sink.records.filter((rec) => rec.key === chatId).length, { timeout: 30_000 }).toBeGreaterThanOrEqual(30);
    expect(new Set(idsOf(sink.records.filter((rec) => rec.key === chatId))).size).toBe(30);
    await expect.poll(() => r.lastError, { timeout: 10_000 }).toBeUndefined();
  });

  it('purges published outbox rows and processed event ids past their retention, on the leader only, never an unpublished row', async () => {
    const ids = { oldSent: randomUUID(), newSent: randomUUID(), oldUnsent: randomUUID(), oldSeen: randomUUID(), newSeen: randomUUID() };
    const rows: Array<[string, string | null, string]> = [
      [ids.oldSent, "now() - interval '25 hours'", "now() - interval '30 hours'"],
      [ids.newSent, "now() - interval '23 hours'", "now() - interval '30 hours'"],
      [ids.oldUnsent, null, "now() - interval '30 hours'"],
    ];
    for (const [id, publishedAt, createdAt] of rows) {
      // The unpublished one carries a transaction id from the future: the relay leaves it alone
      // (as it would a row whose transaction is still open), so it stays unpublished throughout.
      await ts.pool.query(
        `insert into "${ts.schema}".outbox (event_id, topic, key, envelope, headers, created_at, published_at, txid)
         values ($1, 'chat.events', 'k', '{}', '{}', ${createdAt}, ${publishedAt ?? 'null'}, ${publishedAt ? 'pg_current_xact_id()' : "'999999999999'::xid8"})`,
        [id],
      );
    }
    cleanups.push(() => ts.pool.query(`delete from "${ts.schema}".outbox where event_id = $1`, [ids.oldUnsent]));
    await ts.pool.query(
      `insert into "${ts.schema}".processed_events (consumer_group, event_id, topic, processed_at) values
         ('g', $1, 'chat.events', now() - interval '49 hours'), ('g', $2, 'chat.events', now() - interval '47 hours')`,
      [ids.oldSeen, ids.newSeen],
    );
    const housekeeping = { intervalMs: 100, tasks: messagingHousekeeping(ts.schema, { outboxHours: 24, processedEventsHours: 48 }) };
    const leader = relay({ housekeeping });
    leader.relay.start();
    await expect.poll(() => leader.relay.isLeader, { timeout: 10_000 }).toBe(true);
    const present = async (table: string, column: string, candidates: string[]) =>
      (await ts.pool.query(`select ${column} as id from "${ts.schema}".${table} where ${column} = any($1) order by 1`, [candidates])).rows.map((r) => r.id as string).sort();
    // The tasks run one after the other: wait for the last one's effects and metric too.
    const okTasks = async () => (await leader.metrics.housekeepingRuns.get()).values.filter((v) => v.labels.outcome === 'ok').map((v) => v.labels.task).sort();
    await expect
      .poll(
        async () => ({
          outbox: await present('outbox', 'event_id', [ids.oldSent, ids.newSent, ids.oldUnsent]),
          processed: await present('processed_events', 'event_id', [ids.oldSeen, ids.newSeen]),
          tasks: await okTasks(),
        }),
        { timeout: 10_000 },
      )
      .toEqual({ outbox: [ids.newSent, ids.oldUnsent].sort(), processed: [ids.newSeen], tasks: ['purge-outbox', 'purge-processed-events'] });

    // A standby relay (not the leader) never runs it.
    const standby = relay({ housekeeping });
    standby.relay.start();
    await sleep(500);
    expect(standby.relay.isLeader).toBe(false);
    expect((await standby.metrics.housekeepingRuns.get()).values).toHaveLength(0);
  });

  it('publishes while a long housekeeping task runs: the task has a connection of its own', async () => {
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    let finished = false;
    const slow: HousekeepingTask = {
      name: 'slow-purge',
      run: async (client) => {
        started();
        await client.query('select pg_sleep(4)');
        finished = true;
        return {};
      },
    };
    const sink = await collect(kafka, ['chat.events']);
    cleanups.push(() => sink.stop());
    const { relay: r } = relay({ pollIntervalMs: 20, housekeeping: { intervalMs: 3_600_000, tasks: [slow] } });
    r.start();
    await running;
    const chatId = randomUUID();
    const event = chatEvent(chatId, 1);
    await ts.db.transaction((tx) => publish()(tx, event));
    await expect.poll(() => idsOf(sink.records.filter((rec) => rec.key === chatId)), { timeout: 10_000, interval: 10 }).toEqual([event.id]);
    expect(finished).toBe(false);
  });

  it('ends a long purge after the batch in hand when it stops', async () => {
    const { task: endless, batches } = endlessPurge();
    const { relay: r, metrics } = relay({ housekeeping: { intervalMs: 3_600_000, tasks: [endless] } });
    r.start();
    await expect.poll(() => batches(), { timeout: 10_000 }).toBeGreaterThan(3);
    await r.stop();
    const after = batches();
    expect((await metrics.housekeepingRuns.get()).values.find((v) => v.labels.task === 'endless-purge')?.labels.outcome).toBe('ok');
    await sleep(200);
    expect(batches()).toBe(after);
  });

  it('ends its housekeeping after the batch in hand when it loses the lead, as when it stops', async () => {
    const { task: endless, batches } = endlessPurge();
    const { relay: r, metrics } = relay({ pollIntervalMs: 20, housekeeping: { intervalMs: 3_600_000, tasks: [endless] } });
    r.start();
    await expect.poll(() => batches(), { timeout: 10_000 }).toBeGreaterThan(3);
    // The leader's connection is cut: its next pass fails and it lets go of the lead.
    const { rows: killed } = await ts.pool.query<{ ok: boolean }>(
      `select pg_terminate_backend(pid) as ok from pg_stat_activity where query like '%pg_snapshot_xmin%' and query like $1 and pid <> pg_backend_pid()`,
      [`%"${ts.schema}"."outbox"%`],
    );
    expect(killed.map((k) => k.ok)).toEqual([true]);
    await expect.poll(async () => (await metrics.housekeepingRuns.get()).values.find((v) => v.labels.task === 'endless-purge')?.labels.outcome, { timeout: 10_000 }).toBe('ok');
    const ended = batches();
    await sleep(300);
    expect(batches()).toBe(ended);
    await expect.poll(() => r.isLeader, { timeout: 10_000 }).toBe(true);
  });
});
