/**
 * Admin benchmark (issue 7): the usage query over a year of data, and how fast the read models
 * absorb events.
 *
 *   npm run bench:admin -w @vivier/bench     (or: node --import tsx tools/bench/src/admin.bench.ts)
 *
 * Starts its own test infrastructure (fresh database, Redis prefix) and a fresh dev Kafka broker,
 * and the admin service as its own process (apps/admin/src/main.ts) on a loopback port.
 * 1. Seeds a year (2025) of daily usage aggregates for USERS (10,000) users × 4 models straight
 *    into the admin schema, as the admin role (INSERT … SELECT generate_series, then the roll-ups
 *    from the base grain), and runs GET /api/v1/admin/usage over the whole year ROUNDS (20)
 *    times for each groupBy, plus a range that is not made of whole months and one user's year.
 * 2. Events/s: EVENTS (20,000) `chat.message.completed` produced as fast as possible while the
 *    service runs; time from the first send until the aggregates hold all of them.
 * 3. Reply end → visible in /usage: replies produced at RATE/s for SECONDS, each with a model of
 *    its own; GET /usage is polled every POLL_MS and each reply's latency is from its send
 *    (acknowledged by the broker, as chat's relay would be) to the first answer that shows it.
 */
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { createEvent, EVENTS, toKafkaRecord } from '@vivier/contracts';
import { startKafka, startServiceProcess, stopProcess, waitReady, type ServiceProcess, freePort } from '@vivier/dev-stack';
import { startTestInfrastructure } from '@vivier/dev-stack/test-infra';
import { signContext } from '@vivier/service-kit';
import { machineNote, median, percentile, round, writeSection } from './stats';

const USERS = Number(process.env.USERS ?? 10_000);
const ACTIVE_SHARE = Number(process.env.ACTIVE_SHARE ?? 0.1);
const ROUNDS = Number(process.env.ROUNDS ?? 20);
const EVENT_COUNT = Number(process.env.EVENTS ?? 20_000);
const RATE = Number(process.env.RATE ?? 50);
const SECONDS = Number(process.env.SECONDS ?? 20);
const POLL_MS = Number(process.env.POLL_MS ?? 25);
const MAX_WAIT_MS = Number(process.env.MAX_WAIT_MS ?? 50);
const SECRET = `bench-${randomUUID()}-internal-identity-secret`;
const MODELS = [
  ['openai', 'openai/gpt-4o-mini', 0.15, 0.6],
  ['openai', 'openai/gpt-4.1', 2, 8],
  ['anthropic', 'anthropic/claude-sonnet-4-5', 3, 15],
  ['gemini', 'gemini/gemini-2.5-flash', 0.3, 2.5],
] as const;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function timed<T>(what: string, fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await fn();
  const ms = performance.now() - started;
  process.stdout.write(`${what}: ${round(ms / 1000, 1)} s\n`);
  return { value, ms };
}

/** Seeds the base grain for a year, then every roll-up from it, as the service would have them. */
async function seed(db: pg.Pool): Promise<{ rows: Record<string, number>; sizeMb: number; seconds: number }> {
  const started = performance.now();
  await timed('users', () =>
    db.query(
      `insert into admin.users (id, email, name, role, created_at)
       select gen_random_uuid(), 'bench-' || i || '@example.test', 'Bench User ' || i, 'user', timestamptz '2024-06-01' + i * interval '1 minute'
       from generate_series(1, $1::int) i`,
      [USERS],
    ),
  );
  const models = MODELS.map(([p, m, i, o]) => `('${p}', '${m}', ${i}::float8, ${o}::float8)`).join(', ');
  await timed('usage_daily (day × provider × model × user)', () =>
    db.query(
      `insert into admin.usage_daily (day, provider, model, user_id, messages, failures, cancelled, cache_hits, tokens_in, tokens_out,
         cost_micros, latency_sum_ms, latency_count, latency_max_ms, latency_bucket_03, latency_bucket_04, latency_bucket_06, latency_bucket_08)
       select day, provider, model, user_id, msgs, msgs / 10, msgs / 20, msgs / 8, msgs * tin, msgs * tout,
              round(msgs * tin * pin + msgs * tout * pout)::bigint,
              (msgs - msgs / 10 - msgs / 20 - msgs / 8) * 1100, msgs - msgs / 10 - msgs / 20 - msgs / 8, 4000,
              (msgs - msgs / 10 - msgs / 20 - msgs / 8) / 4, (msgs - msgs / 10 - msgs / 20 - msgs / 8) / 2, 0,
              (msgs - msgs / 10 - msgs / 20 - msgs / 8) - (msgs - msgs / 10 - msgs / 20 - msgs / 8) / 4 - (msgs - msgs / 10 - msgs / 20 - msgs / 8) / 2
       from (
         select d::date as day, m.provider, m.model, m.pin, m.pout, u.id as user_id,
                1 + floor(random() * 12)::int as msgs, 200 + floor(random() * 800)::int as tin, 50 + floor(random() * 500)::int as tout
         from generate_series(date '2025-01-01', date '2025-12-31', interval '1 day') d
         cross join admin.users u
         cross join (values ${models}) m(provider, model, pin, pout)
         where random() < $1::float8
       ) r`,
      [ACTIVE_SHARE],
    ),
  );
  const { rows: columns } = await db.query<{ column_name: string }>(
    `select column_name from information_schema.columns where table_schema = 'admin' and table_name = 'usage_monthly_user'
       and column_name not in ('month', 'user_id') order by ordinal_position`,
  );
  const names = columns.map((c) => c.column_name);
  const sums = names.map((c) => (c === 'latency_max_ms' ? `max(${c})` : `sum(${c})`)).join(', ');
  const list = names.join(', ');
  await timed('usage_daily_user_tokens', () =>
    db.query(`insert into admin.usage_daily_user_tokens (day, user_id, tokens) select day, user_id, sum(tokens_in + tokens_out) from admin.usage_daily group by day, user_id`),
  );
  await timed('usage_monthly_user', () =>
    db.query(`insert into admin.usage_monthly_user (month, user_id, ${list}) select date_trunc('month', day)::date, user_id, ${sums} from admin.usage_daily group by 1, user_id`),
  );
  await timed('usage_daily_model', () =>
    db.query(`insert into admin.usage_daily_model (day, provider, model, ${list}) select day, provider, model, ${sums} from admin.usage_daily group by day, provider, model`),
  );
  await timed('vacuum analyze', async () => {
    for (const table of ['users', 'usage_daily', 'usage_daily_user_tokens', 'usage_monthly_user', 'usage_daily_model']) await db.query(`vacuum analyze admin.${table}`);
  });
  const rows: Record<string, number> = {};
  for (const table of ['usage_daily', 'usage_daily_user_tokens', 'usage_monthly_user', 'usage_daily_model']) {
    rows[table] = (await db.query<{ n: number }>(`select count(*)::int as n from admin.${table}`)).rows[0]!.n;
  }
  const { rows: size } = await db.query<{ bytes: string }>(
    `select sum(pg_total_relation_size(c.oid))::bigint as bytes from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'admin' and c.relkind = 'r'`,
  );
  return { rows, sizeMb: Number(size[0]!.bytes) / 1024 / 1024, seconds: (performance.now() - started) / 1000 };
}

async function main(): Promise<void> {
  const infra = await startTestInfrastructure();
  const kafkaBroker = await startKafka();
  const brokers = kafkaBroker.bootstrap;
  const db = new pg.Pool({ connectionString: infra.env.VIVIER_TEST_DATABASE_URL_ADMIN, max: 4 });
  let admin: ServiceProcess | undefined;
  const kafka = new Kafka({ clientId: 'admin-bench', brokers, logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  try {
    const seeded = await seed(db);
    process.stdout.write(`seeded ${JSON.stringify(seeded.rows)} (${round(seeded.sizeMb, 0)} MB) in ${round(seeded.seconds, 0)} s\n`);

    const port = await freePort();
    admin = startServiceProcess('admin', {
      port,
      env: {
        ...process.env,
        NODE_ENV: 'test',
        LOG_LEVEL: 'warn',
        DATABASE_URL: infra.env.VIVIER_TEST_DATABASE_URL_ADMIN,
        REDIS_URL: infra.env.REDIS_URL,
        REDIS_KEY_PREFIX: infra.env.VIVIER_TEST_REDIS_PREFIX,
        KAFKA_BROKERS: brokers.join(','),
        KAFKA_PRODUCER_IDEMPOTENT: 'false',
        KAFKA_LOG_LEVEL: 'nothing',
        // The dev broker holds every fetch for the whole wait, even with data there (a real Kafka answers at once).
        CONSUMER_MAX_WAIT_MS: String(MAX_WAIT_MS),
        INTERNAL_IDENTITY_SECRET: SECRET,
      },
    });
    await waitReady(admin);
    const base = `http://127.0.0.1:${port}`;
    const identity = { sub: randomUUID(), role: 'admin' as const, sid: randomUUID(), kind: 'access_token' as const };
    const get = async (path: string) => {
      const headers = signContext({ ip: '127.0.0.1', identity, exp: Math.floor(Date.now() / 1000) + 600 }, SECRET);
      const started = performance.now();
      const res = await fetch(`${base}${path}`, { headers });
      const body = await res.text();
      const ms = performance.now() - started;
      if (res.status !== 200) throw new Error(`${path} answered ${res.status}: ${body.slice(0, 300)}`);
      return { ms, body: JSON.parse(body) as { items: Array<Record<string, unknown>>; totals: { messages: number }; source: string }, bytes: body.length };
    };

    // 1. The usage query over a year.
    const { rows: someUser } = await db.query<{ user_id: string }>('select user_id from admin.usage_daily limit 1');
    const queries: Array<[string, string]> = [
      ['groupBy=day, 2025', '/api/v1/admin/usage?from=2025-01-01&to=2025-12-31&groupBy=day'],
      ['groupBy=provider, 2025', '/api/v1/admin/usage?from=2025-01-01&to=2025-12-31&groupBy=provider'],
      ['groupBy=model, 2025', '/api/v1/admin/usage?from=2025-01-01&to=2025-12-31&groupBy=model'],
      ['groupBy=user (top 100), 2025', '/api/v1/admin/usage?from=2025-01-01&to=2025-12-31&groupBy=user'],
      [`groupBy=user (all ${USERS}), 2025`, `/api/v1/admin/usage?from=2025-01-01&to=2025-12-31&groupBy=user&limit=${Math.min(USERS, 10_000)}`],
      ['groupBy=user (top 100), 2025-01-15 – 2025-12-20', '/api/v1/admin/usage?from=2025-01-15&to=2025-12-20&groupBy=user'],
      ['groupBy=model, one user, 2025', `/api/v1/admin/usage?from=2025-01-01&to=2025-12-31&groupBy=model&userId=${someUser[0]!.user_id}`],
    ];
    const queryRows: string[] = [];
    for (const [name, path] of queries) {
      await get(path); // warm-up
      const times: number[] = [];
      let last: Awaited<ReturnType<typeof get>> | undefined;
      for (let i = 0; i < ROUNDS; i++) {
        last = await get(path);
        times.push(last.ms);
      }
      const line = `| ${name} | \`${last!.body.source}\` | ${last!.body.items.length} | ${round(last!.bytes / 1024, 0)} KiB | ${round(percentile(times, 50))} ms | ${round(percentile(times, 99))} ms |`;
      queryRows.push(line);
      process.stdout.write(`${line}\n`);
    }

    // 2. Events/s absorbed: a burst of replies while the service runs.
    await producer.connect();
    const users = (await db.query<{ id: string }>('select id from admin.users order by created_at limit 1000')).rows.map((r) => r.id);
    const reply = (provider: string, model: string, userId: string) =>
      createEvent(EVENTS.chatMessageCompleted, {
        chatId: randomUUID(),
        userId,
        messageId: randomUUID(),
        userMessageId: randomUUID(),
        status: 'completed',
        provider,
        model,
        usage: { promptTokens: 120, completionTokens: 80 },
        latencyMs: 900,
        cached: false,
        completedAt: new Date().toISOString(),
      });
    const applied = async (provider: string) =>
      Number((await db.query<{ n: string }>('select coalesce(sum(messages), 0) as n from admin.usage_daily_model where provider = $1', [provider])).rows[0]!.n);
    // The consumer group is joined once a first event shows.
    await producer.send({ topic: 'chat.events', acks: -1, messages: [toKafkaRecord(reply('bench-warm', 'bench-warm/m', users[0]!))] });
    const warmDeadline = Date.now() + 120_000;
    while ((await applied('bench-warm')) < 1) {
      if (Date.now() > warmDeadline) throw new Error('the admin consumer did not apply the first event');
      await sleep(100);
    }
    const records = Array.from({ length: EVENT_COUNT }, (_, i) => toKafkaRecord(reply('bench', `bench/m${i % 4}`, users[i % users.length]!)));
    const burstStarted = performance.now();
    for (let i = 0; i < records.length; i += 500) {
      await producer.sendBatch({ acks: -1, topicMessages: [{ topic: 'chat.events', messages: records.slice(i, i + 500).map(({ key, value, headers }) => ({ key, value, headers })) }] });
    }
    const producedMs = performance.now() - burstStarted;
    const burstDeadline = Date.now() + 600_000;
    while ((await applied('bench')) < EVENT_COUNT) {
      if (Date.now() > burstDeadline) throw new Error(`only ${await applied('bench')} of ${EVENT_COUNT} events applied`);
      await sleep(50);
    }
    const absorbMs = performance.now() - burstStarted;
    const eventsPerSecond = EVENT_COUNT / (absorbMs / 1000);
    process.stdout.write(`absorbed ${EVENT_COUNT} events in ${round(absorbMs / 1000, 2)} s (${round(eventsPerSecond, 0)}/s; produced in ${round(producedMs / 1000, 2)} s)\n`);

    // 3. Reply end → visible in GET /usage, at a steady rate.
    const today = new Date().toISOString().slice(0, 10);
    const sentAt = new Map<string, number>();
    const latencies: number[] = [];
    let sending = true;
    const latencyDeadline = Date.now() + (SECONDS + 60) * 1000;
    const poller = (async () => {
      while ((sending || sentAt.size > 0) && Date.now() < latencyDeadline) {
        const { body } = await get(`/api/v1/admin/usage?from=${today}&to=${today}&groupBy=model&provider=bench-lat`);
        const now = performance.now();
        for (const item of body.items) {
          const at = sentAt.get(item.model as string);
          if (at !== undefined) {
            latencies.push(now - at);
            sentAt.delete(item.model as string);
          }
        }
        await sleep(POLL_MS);
      }
    })();
    const total = RATE * SECONDS;
    const steadyStart = performance.now();
    for (let i = 0; i < total; i++) {
      const due = steadyStart + (i / RATE) * 1000;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      const model = `bench-lat/m${i}`;
      const record = toKafkaRecord(reply('bench-lat', model, users[i % users.length]!));
      await producer.send({ topic: 'chat.events', acks: -1, messages: [{ key: record.key, value: record.value, headers: record.headers }] });
      sentAt.set(model, performance.now());
    }
    sending = false;
    await poller;
    const lost = sentAt.size;
    process.stdout.write(`visible latency over ${latencies.length} replies: p50 ${round(percentile(latencies, 50))} ms, p99 ${round(percentile(latencies, 99))} ms, max ${round(Math.max(...latencies))} ms${lost ? `, ${lost} never seen` : ''}\n`);

    await writeSection(
      'admin',
      `## Admin analytics (issue 7)

Command: \`npm run bench:admin -w @vivier/bench\` (\`node --import tsx tools/bench/src/admin.bench.ts\`; ${machineNote()}; 2 cores, shared and noisy).
The admin service runs as its own process on a loopback port against real PostgreSQL, Redis and a fresh dev Kafka broker;
requests go straight to it with a signed admin context (no gateway).

**Data**: a year (2025) of daily aggregates for ${USERS.toLocaleString('en')} users × 4 models (each user active on a model on
${Math.round(ACTIVE_SHARE * 100)} % of the days), seeded as the admin role: ${Object.entries(seeded.rows)
        .map(([t, n]) => `\`${t}\` ${n.toLocaleString('en')} rows`)
        .join(', ')}; ${round(seeded.sizeMb, 0)} MB with indexes.

**GET /api/v1/admin/usage** over the whole year, ${ROUNDS} runs each after one warm-up (HTTP round trip included):

| query | aggregate read | items | response | p50 | p99 |
| --- | --- | --- | --- | --- | --- |
${queryRows.join('\n')}

Each query reads the smallest aggregate with the grain it needs: day/provider/model sums read
\`usage_daily_model\` (day × model: ${seeded.rows.usage_daily_model?.toLocaleString('en')} rows for the year); by user, whole
months come from \`usage_monthly_user\`; the days of partial months at either end rank users from the narrow
\`usage_daily_user_tokens\` and add the other counters of the top \`limit\` only from \`usage_daily\`;
one user's figures come from the full grain through its (user, day) index. Percentiles are estimated from the
20-bucket latency histograms summed over the rows.

**Events absorbed**: ${EVENT_COUNT.toLocaleString('en')} \`chat.message.completed\` produced in ${round(producedMs / 1000, 1)} s
while the service ran; all in the aggregates after ${round(absorbMs / 1000, 1)} s: **${round(eventsPerSecond, 0)} events/s**
(consumer runs of up to 100 events per transaction; each handler appends to \`usage_pending\`, and at commit a
deferred trigger folds the run into the user totals and the four aggregates, grouped, one upsert per distinct row,
in key order so that concurrent runs cannot deadlock).

**Reply end → visible in /usage**: ${latencies.length} replies at ${RATE}/s, each with a model of its own, from the
broker's acknowledgement of the send to the first \`GET /usage\` answer listing it (polled every ${POLL_MS} ms):
p50 **${round(median(latencies))} ms**, p99 **${round(percentile(latencies, 99))} ms**, max ${round(Math.max(...latencies))} ms${lost ? ` (${lost} never seen)` : ''}.
The dev broker (librdkafka's mock cluster) holds every fetch for the consumer's whole wait even when data is there,
so the consumer runs with \`CONSUMER_MAX_WAIT_MS=${MAX_WAIT_MS}\` here (npm start does the same); a real Kafka answers a fetch as soon as data arrives.`,
    );
  } finally {
    await producer.disconnect().catch(() => undefined);
    if (admin) await stopProcess(admin);
    await db.end();
    await kafkaBroker.stop();
    await infra.stop();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
