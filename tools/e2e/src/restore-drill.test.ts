import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allTopics, CONSUMER_GROUPS, SUBSCRIPTIONS } from '@vivier/contracts';
import type { DevKafka } from '@vivier/dev-kafka';
import { freePort, ROOT, startKafka, startServiceProcess, stopProcess, waitReady, type ServiceProcess } from '@vivier/dev-stack';
import { isolatedDatabase } from '@vivier/dev-stack/test-infra';
import { testEnv } from '@vivier/service-kit/testing';

// The restore drill of docs/operations.md ("Backups and restore"), with the real scripts, pg_dump,
// the S3 server and the services as processes: write data, back up (infra/backup/backup.sh), stop
// the services, wipe their schemas, restore (restore.sh), check every row, move the admin consumer
// group back to the start of every topic (the worst case of the documented offset reset), start
// again: the data is there, nothing is applied twice, and new work flows.

const SCHEMAS = ['auth', 'chat', 'admin'] as const;

function run(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('exit', (code) => resolve({ code, stderr }));
  });
}

/** Per table of a schema: row count and a digest of every row. */
async function fingerprint(db: pg.Pool, schema: string): Promise<Record<string, string>> {
  const { rows: tables } = await db.query<{ name: string }>(
    `select c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = $1 and c.relkind in ('r', 'p') and not c.relispartition order by 1`,
    [schema],
  );
  const result: Record<string, string> = {};
  for (const { name } of tables) {
    const { rows } = await db.query<{ n: number; digest: string }>(
      `select count(*)::int as n, md5(coalesce(string_agg(t::text, '|' order by t::text), '')) as digest from "${schema}"."${name}" t`,
    );
    result[name] = `${rows[0]!.n} rows ${rows[0]!.digest}`;
  }
  return result;
}

describe('backup and restore drill', () => {
  let dev: DevKafka;
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;
  let adminDb: pg.Pool;
  let adminUrl: string;
  let procs: ServiceProcess[] = [];
  let gateway = '';

  const start = async () => {
    const common = { KAFKA_BROKERS: dev.bootstrap.join(','), LOG_LEVEL: 'warn', CONSUMER_SESSION_TIMEOUT_MS: '6000' };
    const [authPort, chatPort, adminPort, gatewayPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const service = (name: 'auth' | 'chat' | 'admin', port: number, extra: Record<string, string> = {}) =>
      startServiceProcess(name, { port, env: { ...process.env, ...testEnv(name, { ...common, DATABASE_URL: database.serviceUrls[name], ...extra }) } });
    procs = [service('auth', authPort, { REGISTER_RATE_LIMIT_PER_IP: '1000' }), service('chat', chatPort, { CHAT_DEFAULT_MODEL: 'sim/fast' }), service('admin', adminPort)];
    await Promise.all(procs.map((p) => waitReady(p)));
    const gw = startServiceProcess('gateway', {
      port: gatewayPort,
      env: {
        ...process.env,
        ...testEnv('gateway', { ...common, AUTH_URL: `http://127.0.0.1:${authPort}`, CHAT_URL: `http://127.0.0.1:${chatPort}`, ADMIN_URL: `http://127.0.0.1:${adminPort}` }),
      },
    });
    procs.push(gw);
    await waitReady(gw);
    gateway = `http://127.0.0.1:${gatewayPort}`;
  };
  const stop = async () => {
    for (const p of procs.reverse()) await stopProcess(p);
    procs = [];
  };

  beforeAll(async () => {
    dev = await startKafka();
    database = await isolatedDatabase('restore_drill');
    const url = new URL(process.env.VIVIER_TEST_DATABASE_ADMIN_URL!);
    url.pathname = new URL(database.serviceUrls.auth).pathname;
    adminUrl = url.toString();
    adminDb = new pg.Pool({ connectionString: adminUrl, max: 2 });
  }, 120_000);
  afterAll(async () => {
    await stop();
    await adminDb?.end();
    await dev?.stop();
    await database?.drop();
  });

  it('restores every row from S3, and the services resume with nothing lost or applied twice', async () => {
    await start();
    const email = `drill-${randomUUID().slice(0, 8)}@example.com`;
    const password = 'a password for the restore drill';
    const registered = await fetch(`${gateway}/api/v1/auth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password }) });
    expect(registered.status).toBe(201);
    const { accessToken, user } = (await registered.json()) as { accessToken: string; user: { id: string } };
    const headers = { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' };
    const chat = (await (await fetch(`${gateway}/api/v1/chats`, { method: 'POST', headers, body: '{}' })).json()) as { id: string };
    const send = async (content: string) => {
      const res = await fetch(`${gateway}/api/v1/chats/${chat.id}/messages`, { method: 'POST', headers: { ...headers, accept: 'text/event-stream' }, body: JSON.stringify({ content }) });
      expect(await res.text()).toContain('event: done');
    };
    await send('echo: first');
    await send('echo: second');
    const messagesSeenByAdmin = async () =>
      (await adminDb.query<{ messages: number }>('select messages::int from admin.user_totals where user_id = $1', [user.id])).rows[0]?.messages ?? 0;
    await expect.poll(messagesSeenByAdmin, { timeout: 60_000, interval: 250 }).toBe(4);
    // Every outbox row is in Kafka before the snapshot (the drill checks replay, not a backlog).
    await expect
      .poll(async () => (await adminDb.query<{ n: number }>('select ((select count(*) from auth.outbox where published_at is null) + (select count(*) from chat.outbox where published_at is null))::int as n')).rows[0]!.n, { timeout: 30_000 })
      .toBe(0);
    await stop();

    const before = Object.fromEntries(await Promise.all(SCHEMAS.map(async (s) => [s, await fingerprint(adminDb, s)] as const)));
    expect(Number(before.chat!['messages']!.split(' ')[0])).toBe(4);

    const s3 = {
      ...process.env,
      BACKUP_S3_URI: `s3://${process.env.S3_BUCKET}/restore-drill-${randomUUID().slice(0, 8)}`,
      S3_FORCE_PATH_STYLE: 'true',
      AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID ?? 'S3RVER',
      AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY ?? 'S3RVER',
      AWS_REGION: process.env.AWS_REGION ?? 'us-east-1',
      NODE: process.execPath,
    };
    const backup = await run('bash', ['infra/backup/backup.sh', ...SCHEMAS], { ...s3, BACKUP_DATABASE_URL: adminUrl });
    expect(backup.code, backup.stderr).toBe(0);

    // Disaster: the schemas are gone.
    for (const schema of SCHEMAS) await adminDb.query(`drop schema "${schema}" cascade`);
    const { rows: left } = await adminDb.query<{ n: number }>(`select count(*)::int as n from pg_namespace where nspname = any($1)`, [SCHEMAS]);
    expect(left[0]!.n).toBe(0);

    const restore = await run('bash', ['infra/backup/restore.sh', '--from', 'latest', '--yes', ...SCHEMAS], { ...s3, ADMIN_DATABASE_URL: adminUrl });
    expect(restore.code, restore.stderr).toBe(0);
    expect(restore.stderr).toContain('--reset-offsets');
    for (const schema of SCHEMAS) expect(await fingerprint(adminDb, schema), schema).toEqual(before[schema]);

    // The worst case of the offset reset restore.sh prints: admin reads every topic from the start.
    const kafka = new Kafka({ clientId: 'restore-drill', brokers: dev.bootstrap, logLevel: logLevel.NOTHING });
    // (kafkajs' admin.resetOffsets needs DescribeGroups, which the dev broker lacks: commit the
    // offsets as a member of the group instead, as kafka-consumer-groups.sh does.)
    const rewind = kafka.consumer({ groupId: CONSUMER_GROUPS.admin, sessionTimeout: 6000, heartbeatInterval: 500 });
    await rewind.connect();
    try {
      await rewind.subscribe({ topics: [...SUBSCRIPTIONS.admin] });
      const joined = new Promise((resolve) => rewind.on(rewind.events.GROUP_JOIN, resolve));
      await rewind.run({ autoCommit: false, eachBatchAutoResolve: false, eachBatch: async () => undefined });
      await joined;
      const partitions = allTopics().filter((t) => (SUBSCRIPTIONS.admin as readonly string[]).includes(t.name));
      await rewind.commitOffsets(partitions.flatMap((t) => Array.from({ length: t.partitions }, (_, partition) => ({ topic: t.name, partition, offset: '0' }))));
    } finally {
      await rewind.disconnect();
    }

    await start();
    // The restored user signs in; the chat reads back; nothing replayed counted twice.
    const login = await fetch(`${gateway}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password }) });
    expect(login.status).toBe(200);
    const again = { authorization: `Bearer ${((await login.json()) as { accessToken: string }).accessToken}`, 'content-type': 'application/json' };
    const history = (await (await fetch(`${gateway}/api/v1/chats/${chat.id}/messages`, { headers: again })).json()) as { items: Array<{ content: string }> };
    expect(history.items.map((m) => m.content)).toEqual(['echo: first', 'first', 'echo: second', 'second']);
    const res = await fetch(`${gateway}/api/v1/chats/${chat.id}/messages`, { method: 'POST', headers: { ...again, accept: 'text/event-stream' }, body: JSON.stringify({ content: 'echo: third' }) });
    expect(await res.text()).toContain('event: done');
    await expect.poll(messagesSeenByAdmin, { timeout: 60_000, interval: 250 }).toBe(6);
    // Admin did read everything again (the rewind took), and skipped what the restored data held.
    const adminProcess = procs.find((p) => p.name === 'admin')!;
    const duplicates = async () => {
      const text = await (await fetch(`http://127.0.0.1:${adminProcess.port}/metrics`)).text();
      return [...text.matchAll(/^vivier_consumer_events_total\{[^}]*outcome="duplicate"[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
    };
    // At least the registration, the chat and both turns came round again.
    await expect.poll(duplicates, { timeout: 30_000, interval: 250 }).toBeGreaterThanOrEqual(5);
    expect(await messagesSeenByAdmin()).toBe(6);
    const { rows: users } = await adminDb.query<{ n: number }>('select count(*)::int as n from admin.users where id = $1', [user.id]);
    expect(users[0]!.n).toBe(1);
  }, 300_000);
});
