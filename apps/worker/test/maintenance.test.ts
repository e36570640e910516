import { randomUUID } from 'node:crypto';
import net from 'node:net';
import type pg from 'pg';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workerTables } from '@vivier/db-worker';
import { createDatabase, createS3 } from '@vivier/service-kit';
import { expireExportsJob } from '../src/modules/exports/export-expiry.service';
import { purgeFinishedJobsJob } from '../src/modules/maintenance/maintenance.service';
import { scheduleRepository } from '../src/modules/maintenance/schedule.repository';
import { eventually, sleep, startWorker, workerPool, type TestWorker } from './helpers';

describe('scheduled maintenance on several instances', () => {
  const workers: TestWorker[] = [];
  let pool: pg.Pool;
  const ids = { oldExport: randomUUID(), newExport: randomUUID() };
  const userId = randomUUID();
  const keyOf = (exportId: string) => `exports/${userId}/${exportId}.ndjson`;
  let started: Date;

  beforeAll(async () => {
    const env = {
      MAINTENANCE_INTERVAL_MS: '1000',
      MAINTENANCE_POLL_MS: '100',
    };
    // The first instance is built only to reach the database and S3 before the schedule starts.
    const probe = await startWorker(env, { consumers: false, maintenance: false });
    pool = workerPool(probe.config);
    for (const [exportId, expires] of [[ids.oldExport, '-1 hour'], [ids.newExport, '1 hour']] as const) {
      await probe.app.s3.client.send(new PutObjectCommand({ Bucket: probe.app.s3.bucket, Key: keyOf(exportId), Body: '{}\n' }));
      await pool.query(
        `insert into worker.exports (export_id, user_id, state, object_key, size_bytes, expires_at) values ($1, $2, 'ready', $3, 3, now() + $4::interval)`,
        [exportId, userId, keyOf(exportId), expires],
      );
    }
    workers.push(probe);
    started = new Date();
    workers.push(await startWorker(env, { consumers: false }), await startWorker(env, { consumers: false }));
  });
  afterAll(async () => {
    for (const w of workers) await w.close();
    await pool?.end();
  });

  it('runs each job once per interval however many instances poll', async () => {
    await sleep(3500);
    // From `started` (before the two instances started up, which takes its time on a loaded machine) to now.
    const window = Date.now() - started.getTime();
    const { rows } = await pool.query<{ name: string; instance: string; started_at: Date }>(
      `select name, instance, started_at from worker.schedule_runs where started_at >= $1 order by name, started_at`,
      [started],
    );
    for (const name of ['expire-exports', 'purge-schedule-runs']) {
      const runs = rows.filter((r) => r.name === name);
      // t≈0, 1, 2, 3 s…: never two in one interval, however the two instances interleave.
      expect(runs.length, name).toBeGreaterThanOrEqual(3);
      expect(runs.length, name).toBeLessThanOrEqual(Math.floor(window / 1000) + 1);
      for (let i = 1; i < runs.length; i += 1) {
        expect(runs[i]!.started_at.getTime() - runs[i - 1]!.started_at.getTime(), name).toBeGreaterThanOrEqual(1000);
      }
    }
    const { rows: schedules } = await pool.query('select name, runs from worker.schedules order by name');
    expect(schedules.map((s) => s.name)).toEqual(['expire-exports', 'purge-finished-jobs', 'purge-schedule-runs']);
  });

  // (The worker's outbox and processed event ids are purged by its relay leader, like every
  // service's: see libs/shared/messaging/test/outbox-relay.test.ts.)
  it('expires old exports (deleted from S3), keeping the rest', async () => {
    await eventually(async () => {
      const { rows } = await pool.query(`select 1 from worker.exports where export_id = $1 and state = 'expired'`, [ids.oldExport]);
      return rows.length === 1;
    }, 10_000);
    const { rows: exports } = await pool.query('select export_id, state from worker.exports where user_id = $1 order by state', [userId]);
    expect(exports).toEqual([
      { export_id: ids.oldExport, state: 'expired' },
      { export_id: ids.newExport, state: 'ready' },
    ]);
    const s3 = workers[0]!.app.s3;
    await expect(s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: keyOf(ids.oldExport) }))).rejects.toThrow();
    const kept = await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: keyOf(ids.newExport) }));
    expect(await kept.Body!.transformToString()).toBe('{}\n');
  });
});

describe('expiring exports', () => {
  it('leaves an export whose object S3 could not delete ready for the next run, and says the run failed', async () => {
    const t = await expiryFixture();
    const [gone, stuck] = [randomUUID(), randomUUID()];
    refuseDeletes(t.client, (key) => key === t.keyOf(stuck));
    try {
      for (const exportId of [gone, stuck]) {
        await t.client.send(new PutObjectCommand({ Bucket: t.bucket, Key: t.keyOf(exportId), Body: '{}\n' }));
        await t.insertDue([exportId]);
      }
      await expect(t.job().run(t.db)).rejects.toThrow(/did not delete 1 expired export.*AccessDenied/);
      const { rows } = await t.pool.query('select export_id, state from worker.exports where user_id = $1', [t.userId]);
      expect(Object.fromEntries(rows.map((r) => [r.export_id, r.state]))).toEqual({ [gone]: 'expired', [stuck]: 'ready' });
      // Still there, and still to be deleted: not marked as if it were gone.
      const kept = await t.client.send(new GetObjectCommand({ Bucket: t.bucket, Key: t.keyOf(stuck) }));
      expect(await kept.Body!.transformToString()).toBe('{}\n');
      await expect(t.client.send(new GetObjectCommand({ Bucket: t.bucket, Key: t.keyOf(gone) }))).rejects.toThrow();
    } finally {
      await t.close();
    }
  });

  it('gets past a whole batch of exports S3 would not delete to the ones after it, and ends', async () => {
    const t = await expiryFixture();
    // One batch's worth (500) that S3 refuses, and one more. Asking for the due exports again
    // without the refused ones is what moves the run on: asked plainly, every batch could be the
    // same 500 refused exports, and the run would never end.
    const stuck = Array.from({ length: 500 }, () => randomUUID());
    const stuckKeys = new Set(stuck.map(t.keyOf));
    refuseDeletes(t.client, (key) => stuckKeys.has(key));
    try {
      await t.insertDue([...stuck, randomUUID()]);
      // (Without the skip it would loop for good: the wait then fails, and the test says so.)
      await expect(runToItsEnd(t.job().run(t.db), 60_000)).rejects.toThrow(/did not delete 500 expired export/);
      const { rows } = await t.pool.query<{ state: string; n: number }>('select state, count(*)::int n from worker.exports where user_id = $1 group by state order by state', [t.userId]);
      expect(rows).toEqual([
        { state: 'expired', n: 1 },
        { state: 'ready', n: 500 },
      ]);
    } finally {
      await t.close();
    }
  }, 90_000);

  it('gives up on an S3 delete that never answers, leaving its exports ready for the next run, so the run (and a stop) is not held for good', async () => {
    // An S3 endpoint that takes connections and never answers.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((socket) => void sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const t = await expiryFixture({ S3_ENDPOINT: `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}` });
    const exportId = randomUUID();
    try {
      await t.insertDue([exportId]);
      await expect(runToItsEnd(t.job({ deleteTimeoutMs: 500 }).run(t.db), 30_000)).rejects.toThrow(/abort/i);
      const { rows } = await t.pool.query('select state from worker.exports where export_id = $1', [exportId]);
      expect(rows).toEqual([{ state: 'ready' }]);
    } finally {
      await t.close();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  }, 60_000);
});

/**
 * A worker's database and an S3 client of its own (`s3` overrides its settings) for running the
 * expiry job by hand, with the real job's schedule held meanwhile (holdExpirySchedule) and a user
 * whose exports the test makes; close() gives the schedule back and removes the user's exports.
 */
async function expiryFixture(s3: Partial<Record<'S3_ENDPOINT', string>> = {}) {
  const worker = await startWorker({}, { consumers: false, maintenance: false });
  const pool = workerPool(worker.config);
  const db = createDatabase(pool, workerTables);
  const client = createS3({ ...worker.config, ...s3 });
  const bucket = worker.config.S3_BUCKET;
  const userId = randomUUID();
  const keyOf = (exportId: string) => `exports/${userId}/${exportId}.ndjson`;
  await holdExpirySchedule(pool);
  return {
    pool,
    db,
    client,
    bucket,
    userId,
    keyOf,
    job: (options: { deleteTimeoutMs?: number } = {}) => expireExportsJob({ s3: { client, bucket }, intervalMs: 60_000, ...options }),
    /** Ready exports of the user that expired an hour ago, under keyOf's keys. */
    insertDue: (exportIds: string[]) =>
      pool.query(
        `insert into worker.exports (export_id, user_id, state, object_key, size_bytes, expires_at)
         select id, $1::uuid, 'ready', 'exports/' || $1::text || '/' || id || '.ndjson', 3, now() - interval '1 hour' from unnest($2::uuid[]) id`,
        [userId, exportIds],
      ),
    close: async () => {
      await pool.query(`update worker.schedules set next_run_at = now(), claimed_until = null where name = 'expire-exports'`);
      await pool.query('delete from worker.exports where user_id = $1', [userId]);
      client.destroy();
      await pool.end();
      await worker.close();
    },
  };
}

/** `run`, once it has ended; fails the test if it has not within `timeoutMs` (a run that would go on for good). */
async function runToItsEnd<T>(run: Promise<T>, timeoutMs: number): Promise<T> {
  let ended = false;
  const watched = run.finally(() => (ended = true));
  watched.catch(() => undefined);
  await expect.poll(() => ended, { timeout: timeoutMs, interval: 100 }).toBe(true);
  return watched;
}

/**
 * S3 answers DeleteObjects 200 with the keys it could not delete in `Errors` (AccessDenied, object
 * lock, SlowDown): here the keys `refused` picks are kept out of the real call and reported so.
 */
function refuseDeletes(client: S3Client, refused: (key: string) => boolean): void {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      if (context.commandName !== 'DeleteObjectsCommand') return next(args);
      const input = args.input as { Delete: { Objects: Array<{ Key: string }> } };
      const errors = input.Delete.Objects.filter((o) => refused(o.Key)).map((o) => ({ Key: o.Key, Code: 'AccessDenied', Message: 'Access Denied' }));
      input.Delete.Objects = input.Delete.Objects.filter((o) => !refused(o.Key));
      // (An empty delete is malformed: S3's answer to a call of only refused keys is made here.)
      const result = input.Delete.Objects.length > 0 ? await next(args) : { output: { $metadata: {} }, response: {} };
      const output = result.output as { Errors?: Array<{ Key: string; Code: string; Message: string }> };
      output.Errors = [...(output.Errors ?? []), ...errors];
      return result as Awaited<ReturnType<typeof next>>;
    },
    { step: 'initialize', name: 'partialDelete' },
  );
}

/**
 * Holds the real expiry job's schedule, as a running instance would: workers of other test files
 * must not expire a test's rows with a client that deletes everything meanwhile.
 */
async function holdExpirySchedule(pool: pg.Pool): Promise<void> {
  await pool.query(`insert into worker.schedules (name, interval_ms, next_run_at) values ('expire-exports', 60000, now()) on conflict (name) do nothing`);
  await eventually(async () => {
    const { rowCount } = await pool.query(
      `update worker.schedules set next_run_at = now() + interval '10 minutes', claimed_until = now() + interval '10 minutes'
       where name = 'expire-exports' and (claimed_until is null or claimed_until < now())`,
    );
    return rowCount === 1;
  });
}

describe('purging finished jobs', () => {
  it('deletes completion jobs finished and published longer ago than the processed-event retention, and nothing else', async () => {
    const worker = await startWorker({}, { consumers: false, maintenance: false });
    const pool = workerPool(worker.config);
    const db = createDatabase(pool, workerTables);
    const [old, recent, unpublished, running] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    try {
      const insert = (id: string, state: string, published: boolean, age: string) =>
        pool.query(
          `insert into worker.jobs (assistant_message_id, chat_id, user_id, state, lease_until, result, published_at, updated_at)
           values ($1, $2, $3, $4, now(), '{"content":"the whole reply"}', case when $5 then now() - $6::interval end, now() - $6::interval)`,
          [id, randomUUID(), randomUUID(), state, published, age],
        );
      await insert(old, 'finished', true, '31 days');
      await insert(recent, 'finished', true, '1 day');
      await insert(unpublished, 'finished', false, '31 days');
      await insert(running, 'started', false, '31 days');
      const result = await purgeFinishedJobsJob({ intervalMs: 60_000, retentionHours: 720 }).run(db);
      expect(result.jobs).toBeGreaterThanOrEqual(1);
      const { rows } = await pool.query('select assistant_message_id as id from worker.jobs where assistant_message_id = any($1::uuid[])', [[old, recent, unpublished, running]]);
      expect(rows.map((r) => r.id).sort()).toEqual([recent, unpublished, running].sort());
    } finally {
      await pool.query('delete from worker.jobs where assistant_message_id = any($1::uuid[])', [[old, recent, unpublished, running]]);
      await pool.end();
      await worker.close();
    }
  });
});

describe('a maintenance job', () => {
  it('runs in no transaction of the schedule: its row is not held while it calls out', async () => {
    const worker = await startWorker({}, { consumers: false, maintenance: false });
    const pool = workerPool(worker.config);
    const db = createDatabase(pool, workerTables);
    try {
      const schedules = scheduleRepository(db);
      const name = `test-${randomUUID()}`;
      // What holds the job's schedule row while it runs: a transaction still in progress, or nothing.
      let holder: string | undefined;
      const job = {
        name,
        intervalMs: 60_000,
        run: async () => {
          const { rows } = await pool.query<{ holder: string }>(
            `select pg_xact_status(xmax::text::xid8) as holder from worker.schedules where name = $1 and xmax::text <> '0'`,
            [name],
          );
          holder = rows[0]?.holder ?? 'nothing';
          return { checked: 1 };
        },
      };
      await schedules.register(job);
      expect(await schedules.runIfDue(job, 'test')).toEqual({ checked: 1 });
      // A transaction holding the row (and an id) while the job ran would have held back every outbox relay.
      expect(holder).not.toBe('in progress');
      // Once it has run it is not due again for an interval.
      expect(await schedules.runIfDue(job, 'test')).toBeUndefined();
      const { rows } = await pool.query('select runs, last_result from worker.schedules where name = $1', [name]);
      expect(rows).toEqual([{ runs: 1, last_result: { checked: 1 } }]);
      await pool.query('delete from worker.schedule_runs where name = $1', [name]);
      await pool.query('delete from worker.schedules where name = $1', [name]);
    } finally {
      await pool.end();
      await worker.close();
    }
  });

  it('leaves a running claim alone when an instance starts with the same job or a new interval; a new interval applies from the end of the run', async () => {
    const worker = await startWorker({}, { consumers: false, maintenance: false });
    const pool = workerPool(worker.config);
    const db = createDatabase(pool, workerTables);
    const name = `test-${randomUUID()}`;
    const nextRun = async () => Date.parse((await pool.query<{ at: string }>('select next_run_at::text as at from worker.schedules where name = $1', [name])).rows[0]!.at);
    try {
      const schedules = scheduleRepository(db);
      let release: () => void = () => undefined;
      const job = { name, intervalMs: 1000, run: () => new Promise<Record<string, unknown>>((resolve) => (release = () => resolve({ done: 1 }))) };
      await schedules.register(job);
      const running = schedules.runIfDue(job, 'first');
      // Claimed: the lease (at least 5 min) is the next run.
      await eventually(async () => (await nextRun()) > Date.now() + 60_000);
      const lease = await nextRun();
      // Another instance starts: the claim stays, so nobody else finds the job due meanwhile.
      await schedules.register(job);
      expect(await nextRun()).toBe(lease);
      expect(await schedules.runIfDue(job, 'second')).toBeUndefined();
      // A deploy with a shorter interval while the run is under way: the claim is not cut short.
      await schedules.register({ ...job, intervalMs: 400 });
      expect(await nextRun()).toBe(lease);
      expect(await schedules.runIfDue({ ...job, intervalMs: 400 }, 'second')).toBeUndefined();
      release();
      expect(await running).toEqual({ done: 1 });
      // The run's end is recorded, and schedules the next one with the new interval.
      const { rows } = await pool.query<{ runs: number; by: string; claimed: string | null }>(
        'select runs, last_run_by as by, claimed_until::text as claimed from worker.schedules where name = $1',
        [name],
      );
      expect(rows[0]).toEqual({ runs: 1, by: 'first', claimed: null });
      expect(await nextRun()).toBeLessThanOrEqual(Date.now() + 400);
      // A deploy with a shorter interval between runs: the next run is no later than one new interval away.
      await schedules.register({ ...job, intervalMs: 200 });
      expect(await nextRun()).toBeLessThanOrEqual(Date.now() + 200);
    } finally {
      await pool.query('delete from worker.schedule_runs where name = $1', [name]);
      await pool.query('delete from worker.schedules where name = $1', [name]);
      await pool.end();
      await worker.close();
    }
  });
});
