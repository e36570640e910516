import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ROOT, freePort } from '@vivier/dev-stack';

async function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

let child: ChildProcess | undefined;
afterEach(() => {
  if (child && child.exitCode === null) child.kill('SIGKILL');
});

/** Runs `npm start`'s program (tools/dev-stack/src/cli.ts start) on free ports against this test run's database. */
async function startStack(extraEnv: Record<string, string>) {
  const ports = { gateway: await freePort(), auth: await freePort(), chat: await freePort(), admin: await freePort(), worker: await freePort() };
  const admin = new URL(process.env.VIVIER_TEST_DATABASE_ADMIN_URL!);
  const database = admin.pathname.slice(1);
  admin.pathname = '/postgres';
  child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'tools/dev-stack/src/cli.ts'), 'start'], {
    cwd: ROOT,
    env: {
      ...process.env,
      VIVIER_QUIET: '1',
      LOG_LEVEL: 'warn',
      DATABASE_URL: admin.toString(),
      VIVIER_DB_NAME: database,
      PORT: String(ports.gateway),
      AUTH_PORT: String(ports.auth),
      CHAT_PORT: String(ports.chat),
      ADMIN_PORT: String(ports.admin),
      WORKER_PORT: String(ports.worker),
      // Its own dev broker (KAFKA_BROKERS unset) and Redis keys: these services must not join the
      // consumer groups of other test files running at the same time.
      KAFKA_BROKERS: '',
      // The dev broker holds every rebalance for a session timeout: keep group joins short.
      CONSUMER_SESSION_TIMEOUT_MS: '6000',
      REDIS_KEY_PREFIX: `${process.env.VIVIER_TEST_REDIS_PREFIX ?? 'vivier-test:'}dev-stack:`,
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
  const ready = `Vivier is ready at http://127.0.0.1:${ports.gateway}`;
  await expect.poll(() => output.includes(ready) || child!.exitCode !== null, { timeout: 90_000, interval: 200 }).toBe(true);
  expect(output, output).toContain(ready);
  return { ports, exited, output: () => output };
}

/**
 * One user through the gateway and every service: register (auth), a chat and a streamed reply
 * (chat, built-in simulator), its title (worker, from chat.events), and an export of all their
 * data (chat → jobs.export → worker → S3 → export.ready → chat) downloaded from its URL.
 */
async function userJourney(base: string): Promise<void> {
  const call = async (method: string, url: string, token?: string, body?: unknown) => {
    const res = await fetch(`${base}${url}`, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, text, json: () => JSON.parse(text) as Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  const registered = await call('POST', '/api/v1/auth/register', undefined, { email: `journey-${Date.now()}@example.com`, password: 'a long journey password' });
  expect(registered.status, registered.text).toBe(201);
  const token = registered.json().accessToken as string;
  const chat = await call('POST', '/api/v1/chats', token, {});
  expect(chat.status, chat.text).toBe(201);
  const chatId = chat.json().id as string;
  const sse = await fetch(`${base}/api/v1/chats/${chatId}/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ content: 'echo: the journey reply' }),
  });
  const stream = await sse.text();
  expect(stream).toContain('event: done');
  expect(stream).toContain('the journey reply');

  await expect
    .poll(async () => (await call('GET', `/api/v1/chats/${chatId}`, token)).json().title, { timeout: 90_000, interval: 500 })
    .toBeTruthy();

  const requested = await call('POST', '/api/v1/exports', token);
  expect(requested.status, requested.text).toBe(202);
  const exportId = requested.json().id as string;
  let ready: Record<string, unknown> = {};
  await expect
    .poll(async () => (ready = (await call('GET', `/api/v1/exports/${exportId}`, token)).json()).status, { timeout: 90_000, interval: 500 })
    .toBe('ready');
  const bundle = await (await fetch(ready.url as string)).text();
  const lines = bundle.trim().split('\n').map((l) => JSON.parse(l) as { type: string; content?: string; id?: string });
  expect(lines[0]!.type).toBe('export');
  expect(lines.find((l) => l.type === 'chat')!.id).toBe(chatId);
  expect(lines.filter((l) => l.type === 'message').map((l) => l.content)).toEqual(['echo: the journey reply', 'the journey reply']);
  expect(lines.at(-1)!.type).toBe('summary');
}

describe('npm start', () => {
  it('brings the five services to ready behind the gateway, and Ctrl-C stops all of it', async () => {
    const stack = await startStack({});
    const health = await fetch(`http://127.0.0.1:${stack.ports.gateway}/api/v1/health`);
    expect(health.status).toBe(200);
    const body = (await health.json()) as { services: Record<string, { status: string }> };
    expect(Object.keys(body.services).sort()).toEqual(['admin', 'auth', 'chat']);
    const worker = await fetch(`http://127.0.0.1:${stack.ports.worker}/ready`);
    expect(worker.status).toBe(200);
    // Routes reach the owning service through the gateway.
    const viaGateway = await fetch(`http://127.0.0.1:${stack.ports.gateway}/.well-known/jwks.json`);
    expect(viaGateway.status).toBe(200);
    expect(((await viaGateway.json()) as { keys: unknown[] }).keys.length).toBeGreaterThan(0);

    await userJourney(`http://127.0.0.1:${stack.ports.gateway}`);

    child!.kill('SIGINT');
    expect(await stack.exited).toBe(0);
    for (const port of Object.values(stack.ports)) expect(await isListening(port)).toBe(false);
    expect(stack.output()).toContain('Stopped.');
  }, 300_000);

  it('starts its own dev Kafka broker and S3 server when none is configured, and reports a busy port by name', async () => {
    const s3Port = await freePort();
    const stack = await startStack({ S3_ENDPOINT: '', DEV_S3_PORT: String(s3Port) });
    expect(stack.output()).toMatch(/kafka\s+127\.0\.0\.1:\d+ \(dev broker/);
    expect(stack.output()).toContain(`s3        http://127.0.0.1:${s3Port}`);

    // A second start while the first runs: the gateway's port is taken, said by name.
    const second = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'tools/dev-stack/src/cli.ts'), 'start'], {
      cwd: ROOT,
      env: { ...process.env, PORT: String(stack.ports.gateway) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    second.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => second.once('exit', resolve));
    expect(code).toBe(1);
    expect(err).toMatch(new RegExp(`port \\d+ \\((auth|gateway)\\) is already in use`));
    expect(err).not.toContain('    at ');

    child!.kill('SIGINT');
    expect(await stack.exited).toBe(0);
    expect(await isListening(s3Port)).toBe(false);
  }, 150_000);
});
