import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DevKafka } from '@vivier/dev-kafka';
import { freePort, startKafka, startServiceProcess, stopProcess, waitReady, type ServiceProcess } from '@vivier/dev-stack';
import { isolatedDatabase } from '@vivier/dev-stack/test-infra';
import { testEnv } from '@vivier/service-kit/testing';

const ORIGIN = 'https://app.example.test';

interface Frame {
  type: string;
  [key: string]: unknown;
}

/** A socket and every frame it received, in order. */
class Client {
  readonly frames: Frame[] = [];
  closed: { code: number; reason: string } | undefined;
  /** The HTTP status of a handshake refused before the upgrade. */
  refused: number | undefined;
  readonly socket: WebSocket;

  constructor(url: string, headers: Record<string, string> = {}) {
    this.socket = new WebSocket(url, { headers });
    this.socket.on('unexpected-response', (req, res) => {
      this.refused = res.statusCode;
      req.destroy();
    });
    this.socket.on('message', (data) => this.frames.push(JSON.parse(data.toString()) as Frame));
    this.socket.on('close', (code, reason) => (this.closed = { code, reason: reason.toString() }));
    this.socket.on('error', () => undefined);
  }

  opened(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.socket.readyState === WebSocket.OPEN) return resolve();
      this.socket.once('open', () => resolve());
      this.socket.once('close', (code) => reject(new Error(`closed ${code} before opening`)));
    });
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  async next(predicate: (f: Frame) => boolean, timeoutMs = 15_000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.frames.find(predicate);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no such frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames.map((f) => f.type))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async closedWith(timeoutMs = 10_000): Promise<{ code: number; reason: string }> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('the socket stayed open');
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.closed;
  }
}

// Two gateway instances in front of one chat: a user's replies stream to every socket they have,
// on either instance, in order, once; sockets follow the credential's fate.
describe('WebSocket delivery across gateway instances', () => {
  let dev: DevKafka;
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;
  const procs: ServiceProcess[] = [];
  const gateways: string[] = [];
  let token = '';
  let chatId = '';

  beforeAll(async () => {
    dev = await startKafka();
    database = await isolatedDatabase('websocket');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vivier-ws-e2e-'));
    const providersFile = path.join(dir, 'providers.json');
    // 200 tokens/s: a reply streams as many deltas over a fraction of a second.
    writeFileSync(providersFile, JSON.stringify({ providers: { sim: { tokensPerSecond: 200, firstTokenLatencyMs: 5 } } }));
    const common = { KAFKA_BROKERS: dev.bootstrap.join(','), LOG_LEVEL: 'warn' };
    const [authPort, chatPort] = [await freePort(), await freePort()];
    const auth = startServiceProcess('auth', { port: authPort, env: { ...process.env, ...testEnv('auth', { ...common, DATABASE_URL: database.serviceUrls.auth }) } });
    const chat = startServiceProcess('chat', {
      port: chatPort,
      env: { ...process.env, ...testEnv('chat', { ...common, DATABASE_URL: database.serviceUrls.chat, PROVIDERS_FILE: providersFile, CHAT_DEFAULT_MODEL: 'sim/fast' }) },
    });
    procs.push(auth, chat);
    await Promise.all([waitReady(auth), waitReady(chat)]);
    for (let i = 0; i < 2; i++) {
      const port = await freePort();
      const gw = startServiceProcess('gateway', {
        port,
        env: {
          ...process.env,
          ...testEnv('gateway', {
            ...common,
            AUTH_URL: `http://127.0.0.1:${authPort}`,
            CHAT_URL: `http://127.0.0.1:${chatPort}`,
            ADMIN_URL: 'http://127.0.0.1:9',
            CORS_ORIGINS: ORIGIN,
            WS_AUTH_TIMEOUT_MS: '700',
          }),
        },
      });
      procs.push(gw);
      await waitReady(gw);
      gateways.push(`127.0.0.1:${port}`);
    }
    const registered = await fetch(`http://${gateways[0]}/api/v1/auth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: `ws-${Date.now()}@example.com`, password: 'a websocket user password' }),
    });
    token = ((await registered.json()) as { accessToken: string }).accessToken;
    const chat1 = await fetch(`http://${gateways[1]}/api/v1/chats`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
    chatId = ((await chat1.json()) as { id: string }).id;
  }, 120_000);
  afterAll(async () => {
    for (const p of procs.reverse()) await stopProcess(p);
    await dev?.stop();
    await database?.drop();
  });

  const connect = async (gateway: string, how: 'header' | 'frame' = 'frame', origin = ORIGIN) => {
    const client = new Client(`ws://${gateway}/api/v1/ws`, { origin, ...(how === 'header' ? { authorization: `Bearer ${token}` } : {}) });
    await client.opened();
    if (how === 'frame') client.send({ type: 'auth', token });
    await client.next((f) => f.type === 'ready');
    return client;
  };

  it('streams a reply sent from one socket to every socket of the user, on both gateways, in order and once', async () => {
    const [a, b] = [await connect(gateways[0]!, 'frame'), await connect(gateways[1]!, 'header')];
    const metrics = await (await fetch(`http://${gateways[0]}/metrics`)).text();
    expect(metrics).toMatch(/^vivier_gateway_websockets_open\{[^}]*\} 1$/m);
    a.send({ type: 'chat.send', requestId: 'r1', chatId, content: 'echo: one two three four five six seven eight nine ten' });
    const accepted = await a.next((f) => f.type === 'chat.accepted' && f.requestId === 'r1');
    const messageId = accepted.messageId as string;
    for (const client of [a, b]) {
      await client.next((f) => f.type === 'chat.done' && f.messageId === messageId);
      const events = client.frames.filter((f) => f.messageId === messageId && f.type !== 'chat.accepted');
      expect(events.map((f) => f.seq)).toEqual(events.map((_, i) => i + 1));
      expect(events[0]!.type).toBe('chat.message');
      expect(events.slice(-2).map((f) => f.type)).toEqual(['chat.usage', 'chat.done']);
      const text = events.filter((f) => f.type === 'chat.delta').map((f) => (f.data as { text: string }).text).join('');
      expect(text).toBe('one two three four five six seven eight nine ten');
      expect(events.filter((f) => f.type === 'chat.delta').length).toBeGreaterThan(3);
    }

    // A client that reconnects asks for what followed the last seq it saw.
    const c = await connect(gateways[1]!);
    c.send({ type: 'chat.resume', chatId, messageId, after: 2 });
    await c.next((f) => f.type === 'chat.done' && f.messageId === messageId);
    const resumed = c.frames.filter((f) => f.messageId === messageId);
    expect(resumed.every((f) => (f.seq as number) > 2)).toBe(true);
    expect(resumed.at(-1)!.type).toBe('chat.done');
    for (const client of [a, b, c]) client.socket.close();
  }, 60_000);

  it('answers bad frames with an error frame and stays open; refuses other origins, late and bad credentials', async () => {
    const a = await connect(gateways[0]!);
    a.send('not json');
    expect(await a.next((f) => f.type === 'error')).toMatchObject({ code: 'invalid_frame' });
    a.send({ type: 'chat.send', chatId: 'not-a-uuid', content: 'x' });
    await a.next((f) => f.type === 'error' && String(f.detail).includes('chat.send'));
    a.send({ type: 'ping' });
    await a.next((f) => f.type === 'pong');
    // A frame over the limit closes the socket (1009), never anything worse.
    a.send(JSON.stringify({ type: 'ping', pad: 'x'.repeat(70_000) }));
    expect((await a.closedWith()).code).toBe(1009);

    const foreign = new Client(`ws://${gateways[0]}/api/v1/ws`, { origin: 'https://evil.example' });
    await expect.poll(() => foreign.refused, { timeout: 10_000 }).toBe(403);
    const silent = new Client(`ws://${gateways[1]}/api/v1/ws`, { origin: ORIGIN });
    expect((await silent.closedWith()).code).toBe(4401);
    const forged = new Client(`ws://${gateways[1]}/api/v1/ws`, { origin: ORIGIN, authorization: 'Bearer not.a.token' });
    expect((await forged.closedWith()).code).toBe(4401);
    // Still serving.
    const b = await connect(gateways[0]!);
    b.socket.close();
  }, 60_000);

  it('closes the sockets on both gateways when the user logs out everywhere', async () => {
    const [a, b] = [await connect(gateways[0]!), await connect(gateways[1]!)];
    const out = await fetch(`http://${gateways[0]}/api/v1/auth/logout-all`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(out.status).toBeLessThan(300);
    expect((await a.closedWith()).code).toBe(4401);
    expect((await b.closedWith()).code).toBe(4401);
    const metrics = await (await fetch(`http://${gateways[0]}/metrics`)).text();
    expect(metrics).toMatch(/^vivier_gateway_websocket_closes_total\{[^}]*code="4401"[^}]*\} [1-9]/m);
  }, 30_000);
});
