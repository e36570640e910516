import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ROOT, freePort } from '@vivier/dev-stack';
import { dropTestDatabase } from '@vivier/dev-stack/test-infra';
import { isListening, startStack, type Stack } from './stack';

let stack: Stack | undefined;
let ownDatabase: string | undefined;
afterEach(async () => {
  // The whole group: a stack left running would load every later test of the run.
  stack?.kill();
  stack = undefined;
  if (ownDatabase) await dropTestDatabase(ownDatabase).catch(() => undefined);
  ownDatabase = undefined;
});

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
    // A database of its own, as on a fresh machine: the run's shared one holds what other files'
    // services stored from their events (providers set through the admin API, among others).
    stack = await startStack({}, 'npm_start');
    ownDatabase = stack.database;
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

    stack.child.kill('SIGINT');
    expect(await stack.exited).toBe(0);
    for (const port of Object.values(stack.ports)) expect(await isListening(port)).toBe(false);
    expect(stack.output()).toContain('Stopped.');
  }, 300_000);

  it('starts its own dev Kafka broker and S3 server when none is configured, and reports a busy port by name', async () => {
    const s3Port = await freePort();
    stack = await startStack({ S3_ENDPOINT: '', DEV_S3_PORT: String(s3Port) });
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

    stack.child.kill('SIGINT');
    expect(await stack.exited).toBe(0);
    expect(await isListening(s3Port)).toBe(false);
  }, 150_000);
});
