import { randomUUID } from 'node:crypto';
import { connect as connectNet, createServer as createNetServer, type Server, type Socket } from 'node:net';
import type { ServerResponse } from 'node:http';
import WebSocket from 'ws';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuthStandIn, cleanup, eventually, standIn, startGateway, type Gateway } from './support';
import { createRedis } from '@vivier/service-kit';
import { testEnv } from '@vivier/service-kit/testing';

// The socket's life at one gateway: closed when the access token expires, when the user is
// disabled, and when it cannot keep up — without holding back the user's other sockets. Delivery
// across two gateway instances and chat's reply events is tools/e2e/src/websocket.test.ts.

afterEach(cleanup);

const ORIGIN = 'https://app.example.test';

interface Frame {
  type: string;
  seq?: number;
  [key: string]: unknown;
}

class Client {
  readonly frames: Frame[] = [];
  closed: { code: number; reason: string } | undefined;
  readonly socket: WebSocket;

  constructor(url: string, token: string) {
    this.socket = new WebSocket(url, { headers: { origin: ORIGIN, authorization: `Bearer ${token}` } });
    this.socket.on('message', (data) => this.frames.push(JSON.parse(data.toString()) as Frame));
    this.socket.on('close', (code, reason) => (this.closed = { code, reason: reason.toString() }));
    this.socket.on('error', () => undefined);
  }

  async ready(): Promise<void> {
    await eventually(() => this.frames.some((f) => f.type === 'ready') || this.closed !== undefined, 5000);
    if (this.closed) throw new Error(`closed ${this.closed.code} ${this.closed.reason}`);
  }

  async closedWith(timeoutMs = 5000): Promise<{ code: number; reason: string }> {
    await eventually(() => this.closed !== undefined, timeoutMs);
    return this.closed!;
  }
}

/** The TCP socket under a client (ws keeps it as `_socket`), to stop and start reading. */
const rawSocket = (client: Client) => (client.socket as unknown as { _socket: Socket })._socket;

let auth: AuthStandIn;
let gw: Gateway;
let wsUrl: string;

beforeEach(async () => {
  auth = await AuthStandIn.start();
  const chat = await standIn();
  gw = await startGateway(
    { AUTH_URL: auth.url, CHAT_URL: chat.url, ADMIN_URL: chat.url, CORS_ORIGINS: ORIGIN, WS_MAX_BUFFERED_BYTES: '65536' },
    { listen: true },
  );
  wsUrl = `${gw.url.replace('http', 'ws')}/api/v1/ws`;
});

/** A reply event as chat publishes it on the user's channel. */
const envelope = (userId: string, seq: number, text: string) =>
  JSON.stringify({ seq, type: 'delta', data: { text }, messageId: '00000000-0000-4000-8000-000000000001', chatId: '00000000-0000-4000-8000-000000000002', userId });

describe('WebSocket lifetime', () => {
  it('closes the socket with 4401 when its access token expires, not before', async () => {
    const token = await auth.sign({ sub: `u-${randomUUID()}`, expiresIn: 3 });
    const { exp } = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number };
    const client = new Client(wsUrl, token);
    await client.ready();
    const closed = await client.closedWith(6000);
    expect(closed).toEqual({ code: 4401, reason: 'access token expired' });
    // Not before the token's expiry (whole seconds; a timer may fire a few ms early).
    expect(Date.now()).toBeGreaterThanOrEqual(exp * 1000 - 50);
  });

  it('closes every socket of a user who is disabled, and only theirs', async () => {
    const userId = `u-${randomUUID()}`;
    const [a, b] = [new Client(wsUrl, await auth.sign({ sub: userId })), new Client(wsUrl, await auth.sign({ sub: userId }))];
    const other = new Client(wsUrl, await auth.sign({ sub: `u-${randomUUID()}` }));
    await Promise.all([a.ready(), b.ready(), other.ready()]);
    // What auth does when an admin disables the user: the key every request checks, then the
    // message that ends what is already open.
    await gw.redis.set(`auth:user-disabled:${userId}`, String(Math.floor(Date.now() / 1000)), 'EX', 900);
    await gw.redis.publish(`${gw.prefix}auth:revocations`, JSON.stringify({ userId }));
    expect((await a.closedWith()).code).toBe(4401);
    expect((await b.closedWith()).code).toBe(4401);
    // A new socket with a token issued before the disable is refused.
    const late = new Client(wsUrl, await auth.sign({ sub: userId, iat: Math.floor(Date.now() / 1000) - 5 }));
    expect((await late.closedWith()).code).toBe(4401);
    expect(other.closed).toBeUndefined();
    other.socket.close();
  });

  it('drops a socket that stops reading (4008) while the user’s other socket gets every event in order', async () => {
    const userId = `u-${randomUUID()}`;
    const token = await auth.sign({ sub: userId });
    const [slow, fast] = [new Client(wsUrl, token), new Client(wsUrl, token)];
    await Promise.all([slow.ready(), fast.ready()]);
    // The slow client stops reading: its kernel buffers fill, then the gateway's send buffer.
    rawSocket(slow).pause();

    const count = 600;
    const text = 'x'.repeat(32 * 1024); // ≈ 19 MiB in all: more than loopback's socket buffers hold
    const channel = `${gw.prefix}user:${userId}`;
    const publishing = (async () => {
      for (let seq = 1; seq <= count; seq++) await gw.redis.publish(channel, envelope(userId, seq, text));
    })();

    // The gateway gives up on the slow one rather than buffer the rest for it; the close frame
    // waits behind its buffer, for a grace (5 s), so a client that reads again within it learns
    // why: it reads again as soon as the gateway has given up, however long the rest takes.
    const closes = async () => (await (await fetch(`${gw.url}/metrics`)).text()).match(/^vivier_gateway_websocket_closes_total\{[^}]*code="4008"[^}]*\} (\d+)$/m)?.[1];
    await eventually(async () => (await closes()) === '1', 20_000);
    rawSocket(slow).resume();
    expect((await slow.closedWith(10_000)).code).toBe(4008);

    await publishing;
    await eventually(() => fast.frames.filter((f) => f.type === 'chat.delta').length === count, 20_000);
    expect(fast.frames.filter((f) => f.type === 'chat.delta').map((f) => f.seq)).toEqual(Array.from({ length: count }, (_, i) => i + 1));
    expect(fast.closed).toBeUndefined();
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    expect(metrics).toMatch(/^vivier_gateway_websocket_closes_total\{[^}]*code="4008"[^}]*\} 1$/m);
    expect(metrics).toMatch(/^vivier_gateway_websockets_open\{[^}]*\} 1$/m);
    // It saw a prefix of the stream, in order, and less than all of it.
    const seen = slow.frames.filter((f) => f.type === 'chat.delta').map((f) => f.seq);
    expect(seen.length).toBeLessThan(count);
    expect(seen).toEqual(seen.map((_, i) => i + 1));
    fast.socket.close();
  }, 40_000);
});

describe('WebSocket frames that call chat', () => {
  const MESSAGE = '00000000-0000-4000-8000-000000000001';
  const CHAT = '00000000-0000-4000-8000-000000000002';
  /** A reply chat does not find for the caller. */
  const NOT_FOUND = '00000000-0000-4000-8000-000000000404';

  /** A chat stand-in: cancels answer 202 (404 for NOT_FOUND); a resume stream sends one event and stays open. */
  async function chatStandIn() {
    const cancels: string[] = [];
    const resumeClosed: number[] = [];
    const chat = await standIn((req, res) => {
      if (req.method === 'POST' && req.url?.endsWith('/cancel')) {
        if (req.url.includes(NOT_FOUND)) {
          res.writeHead(404, { 'content-type': 'application/problem+json' }).end('{"status":404,"code":"not_found"}');
          return;
        }
        cancels.push(req.url);
        res.writeHead(202, { 'content-type': 'application/json' }).end('{}');
        return;
      }
      if (req.method === 'GET' && req.url?.endsWith('/stream')) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('id: 3\nevent: delta\ndata: {"text":"later"}\n\n');
        res.on('close', () => resumeClosed.push(Date.now()));
        return;
      }
      res.writeHead(404).end();
    });
    return { chat, cancels, resumeClosed };
  }

  async function gatewayWith(chatUrl: string, env: Record<string, string> = {}) {
    const g = await startGateway({ AUTH_URL: auth.url, CHAT_URL: chatUrl, ADMIN_URL: chatUrl, CORS_ORIGINS: ORIGIN, ...env }, { listen: true });
    return { g, url: `${g.url.replace('http', 'ws')}/api/v1/ws` };
  }

  it('closes a user’s socket past WS_MAX_SOCKETS_PER_USER with 4029, and takes one again once another has gone', async () => {
    const chat = await standIn();
    const { url } = await gatewayWith(chat.url, { WS_MAX_SOCKETS_PER_USER: '2' });
    const userId = `u-${randomUUID()}`;
    const token = await auth.sign({ sub: userId });
    const [a, b] = [new Client(url, token), new Client(url, token)];
    await Promise.all([a.ready(), b.ready()]);
    const third = new Client(url, token);
    expect((await third.closedWith()).code).toBe(4029);
    // Another user is not counted with them.
    const other = new Client(url, await auth.sign({ sub: `u-${randomUUID()}` }));
    await other.ready();
    a.socket.close();
    await a.closedWith();
    await eventually(async () => {
      const again = new Client(url, token);
      try {
        await again.ready();
        again.socket.close();
        return true;
      } catch {
        return false;
      }
    }, 5000);
    b.socket.close();
    other.socket.close();
  });

  it('refuses a handshake from another origin with 403 problem details, before any upgrade', async () => {
    const socket = new WebSocket(wsUrl, { headers: { origin: 'https://evil.example' } });
    const answer = await new Promise<{ status: number; type: string; body: string } | 'opened'>((resolve) => {
      socket.on('open', () => resolve('opened'));
      socket.on('error', () => undefined);
      socket.on('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (chunk: Buffer) => (body += chunk.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
      });
    });
    expect(answer).not.toBe('opened');
    const refused = answer as { status: number; type: string; body: string };
    expect(refused.status).toBe(403);
    expect(refused.type).toContain('application/problem+json');
    expect(JSON.parse(refused.body)).toMatchObject({ status: 403, code: 'origin_not_allowed' });
  });

  it('cancels a reply by its message id alone, through its chat once the socket has seen it, else by the id', async () => {
    const { chat, cancels } = await chatStandIn();
    const { g, url } = await gatewayWith(chat.url);
    const userId = `u-${randomUUID()}`;
    const client = new Client(url, await auth.sign({ sub: userId }));
    await client.ready();
    await g.redis.publish(`${g.prefix}user:${userId}`, envelope(userId, 1, 'Hel'));
    await eventually(() => client.frames.some((f) => f.type === 'chat.delta'));
    client.socket.send(JSON.stringify({ type: 'chat.cancel', messageId: MESSAGE }));
    await eventually(() => cancels.length === 1);
    expect(cancels).toEqual([`/api/v1/chats/${CHAT}/messages/${MESSAGE}/cancel`]);
    // A reply this socket has seen nothing of (a new tab, a reply still queued): chat finds its chat.
    const unseen = randomUUID();
    client.socket.send(JSON.stringify({ type: 'chat.cancel', messageId: unseen }));
    await eventually(() => cancels.length === 2);
    expect(cancels[1]).toBe(`/internal/v1/messages/${unseen}/cancel`);
    // Not the caller's (chat answers 404): said so on the socket.
    client.socket.send(JSON.stringify({ type: 'chat.cancel', messageId: NOT_FOUND }));
    await eventually(() => client.frames.some((f) => f.type === 'chat.error'));
    expect(client.frames.filter((f) => f.type === 'chat.error')).toEqual([expect.objectContaining({ messageId: NOT_FOUND, code: 'not_found' })]);
    client.socket.close();
  });

  it("answers a chat.send chat refuses with chat.error carrying chat's code and the requestId, and one chat cannot take with internal_error", async () => {
    const chat = await standIn((req, res) => {
      res.writeHead(429, { 'content-type': 'application/problem+json', 'retry-after': '30' }).end(JSON.stringify({ status: 429, code: 'quota_exceeded', detail: 'The monthly token quota is used up.' }));
    });
    const { url } = await gatewayWith(chat.url);
    const client = new Client(url, await auth.sign({ sub: `u-${randomUUID()}` }));
    await client.ready();
    client.socket.send(JSON.stringify({ type: 'chat.send', requestId: 'r-1', chatId: CHAT, content: 'hello' }));
    await eventually(() => client.frames.some((f) => f.type === 'chat.error'));
    expect(client.frames.find((f) => f.type === 'chat.error')).toEqual({ type: 'chat.error', requestId: 'r-1', code: 'quota_exceeded', detail: 'The monthly token quota is used up.' });
    client.socket.close();

    // Chat gone (no one listens): the request still gets an answer, and the socket stays open.
    const gone = await standIn();
    const { url: goneUrl } = await gatewayWith(gone.url);
    await new Promise((resolve) => gone.server.close(resolve));
    const other = new Client(goneUrl, await auth.sign({ sub: `u-${randomUUID()}` }));
    await other.ready();
    other.socket.send(JSON.stringify({ type: 'chat.send', requestId: 'r-2', chatId: CHAT, content: 'hello' }));
    await eventually(() => other.frames.some((f) => f.type === 'chat.error'), 10_000);
    expect(other.frames.find((f) => f.type === 'chat.error')).toMatchObject({ type: 'chat.error', requestId: 'r-2', code: 'internal_error' });
    expect(other.closed).toBeUndefined();
    other.socket.close();
  });

  it("counts every frame that calls chat against the caller's rate limit", async () => {
    const { chat, cancels } = await chatStandIn();
    const { url } = await gatewayWith(chat.url, { RATE_LIMIT_PER_USER: '3', RATE_LIMIT_WINDOW_SECONDS: '60' });
    const client = new Client(url, await auth.sign({ sub: `u-${randomUUID()}` }));
    await client.ready();
    for (let i = 0; i < 5; i++) client.socket.send(JSON.stringify({ type: 'chat.cancel', chatId: CHAT, messageId: MESSAGE }));
    await eventually(() => client.frames.filter((f) => f.type === 'chat.error').length === 2 && cancels.length === 3);
    const limited = client.frames.filter((f) => f.type === 'chat.error');
    expect(limited.every((f) => f.code === 'rate_limited' && (f.retryAfter as number) > 0)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(cancels).toHaveLength(3);
    client.socket.close();
  });

  it('lets a cancel through while the socket has as many resumes waiting on chat as it may', async () => {
    const { chat, cancels, resumeClosed } = await chatStandIn();
    const { url } = await gatewayWith(chat.url);
    const client = new Client(url, await auth.sign({ sub: `u-${randomUUID()}` }));
    await client.ready();
    for (let i = 0; i < 9; i++) client.socket.send(JSON.stringify({ type: 'chat.resume', chatId: CHAT, messageId: randomUUID(), after: 0 }));
    await eventually(() => client.frames.filter((f) => f.type === 'chat.delta').length === 8);
    await eventually(() => client.frames.some((f) => f.type === 'chat.error' && f.code === 'too_many_in_flight'));
    client.socket.send(JSON.stringify({ type: 'chat.cancel', chatId: CHAT, messageId: MESSAGE }));
    await eventually(() => cancels.length === 1);
    client.socket.close();
    await eventually(() => resumeClosed.length === 8, 3000);
  });

  it('lets at most 8 cancels of a socket wait on chat at once', async () => {
    const held: ServerResponse[] = [];
    const chat = await standIn((req, res) => {
      if (req.method === 'POST' && req.url?.endsWith('/cancel')) held.push(res); // answered at the end
      else res.writeHead(404).end();
    });
    const { url } = await gatewayWith(chat.url);
    const client = new Client(url, await auth.sign({ sub: `u-${randomUUID()}` }));
    await client.ready();
    const ids = Array.from({ length: 9 }, () => randomUUID());
    for (const id of ids) client.socket.send(JSON.stringify({ type: 'chat.cancel', chatId: CHAT, messageId: id }));
    await eventually(() => held.length === 8 && client.frames.some((f) => f.type === 'chat.error'));
    expect(client.frames.filter((f) => f.type === 'chat.error')).toEqual([expect.objectContaining({ messageId: ids[8], code: 'too_many_in_flight' })]);
    // Once chat has answered them (404 here, so that each answer shows), cancels go through again.
    for (const res of held.splice(0)) res.writeHead(404).end();
    await eventually(() => client.frames.filter((f) => f.type === 'chat.error' && f.code === 'not_found').length === 8);
    client.socket.send(JSON.stringify({ type: 'chat.cancel', chatId: CHAT, messageId: ids[8] }));
    await eventually(() => held.length === 1);
    held[0]!.writeHead(202).end('{}');
    client.socket.close();
  });

  it('ends a resume stream at chat when its socket closes', async () => {
    const { chat, resumeClosed } = await chatStandIn();
    const { url } = await gatewayWith(chat.url);
    const client = new Client(url, await auth.sign({ sub: `u-${randomUUID()}` }));
    await client.ready();
    client.socket.send(JSON.stringify({ type: 'chat.resume', chatId: CHAT, messageId: MESSAGE, after: 2 }));
    await eventually(() => client.frames.some((f) => f.type === 'chat.delta' && f.seq === 3));
    expect(resumeClosed).toEqual([]);
    const closedAt = Date.now();
    client.socket.close();
    await eventually(() => resumeClosed.length === 1, 2000);
    expect(resumeClosed[0]! - closedAt).toBeLessThan(1000);
  });
});

describe('WebSocket edge cases', () => {
  const CHAT = '00000000-0000-4000-8000-000000000002';

  async function gatewayWith(handler: Parameters<typeof standIn>[0], env: Record<string, string> = {}) {
    const chat = await standIn(handler);
    const g = await startGateway({ AUTH_URL: auth.url, CHAT_URL: chat.url, ADMIN_URL: chat.url, CORS_ORIGINS: ORIGIN, ...env }, { listen: true });
    return { g, url: `${g.url.replace('http', 'ws')}/api/v1/ws`, chat };
  }

  it('a resume of a reply in progress gives each event once: live events wait for the replay, which carries them', async () => {
    const MESSAGE_ID = '00000000-0000-4000-8000-000000000001';
    const sse = (seq: number) => `id: ${seq}\nevent: ${seq === 45 ? 'done' : 'delta'}\ndata: ${JSON.stringify(seq === 45 ? {} : { text: `t${seq}` })}\n\n`;
    const { g, url } = await gatewayWith((_req, res) => {
      // Chat's /stream: what the journal holds after 30, then it follows the reply to its end.
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (let seq = 31; seq <= 42; seq++) res.write(sse(seq));
      setTimeout(() => res.end(sse(43) + sse(44) + sse(45)), 300);
    });
    const userId = `u-${randomUUID()}`;
    const client = new Client(url, await auth.sign({ sub: userId }));
    await client.ready();
    const channel = `${g.prefix}user:${userId}`;
    const live = (seq: number) => JSON.stringify({ seq, type: seq === 45 ? 'done' : 'delta', data: seq === 45 ? {} : { text: `t${seq}` }, messageId: MESSAGE_ID, chatId: CHAT, userId });
    // The client reconnected having seen 30; 41 and 42 come live before it asks for the rest.
    for (const seq of [41, 42]) await g.redis.publish(channel, live(seq));
    await eventually(() => client.frames.filter((f) => f.type === 'chat.delta').length === 2);
    const before = client.frames.length;
    client.socket.send(JSON.stringify({ type: 'chat.resume', chatId: CHAT, messageId: MESSAGE_ID, after: 30 }));
    await new Promise((resolve) => setTimeout(resolve, 100));
    for (const seq of [43, 44, 45]) await g.redis.publish(channel, live(seq));
    await eventually(() => client.frames.some((f) => f.type === 'chat.done'), 5000);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const seqs = client.frames.filter((f) => f.type === 'chat.delta' || f.type === 'chat.done').map((f) => f.seq!);
    expect([...seqs].sort((a, b) => a - b)).toEqual(Array.from({ length: 15 }, (_, i) => 31 + i));
    // After the resume was asked for: in order.
    const after = client.frames.slice(before).filter((f) => f.type === 'chat.delta' || f.type === 'chat.done').map((f) => f.seq!);
    expect(after).toEqual([...after].sort((a, b) => a - b));
    client.socket.close();
  });

  it('a resume after a gap in the live events replays the gap: only what came live after it is skipped', async () => {
    const MESSAGE_ID = '00000000-0000-4000-8000-000000000001';
    const sse = (seq: number) => `id: ${seq}\nevent: ${seq === 26 ? 'done' : 'delta'}\ndata: ${JSON.stringify(seq === 26 ? {} : { text: `t${seq}` })}\n\n`;
    const { g, url } = await gatewayWith((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      let body = '';
      for (let seq = 11; seq <= 26; seq++) body += sse(seq);
      res.end(body);
    });
    const userId = `u-${randomUUID()}`;
    const client = new Client(url, await auth.sign({ sub: userId }));
    await client.ready();
    const channel = `${g.prefix}user:${userId}`;
    const live = (seq: number) => JSON.stringify({ seq, type: 'delta', data: { text: `t${seq}` }, messageId: MESSAGE_ID, chatId: CHAT, userId });
    // 1–10 live, 11–20 missed (Redis reconnected), 21–25 live again.
    for (let seq = 1; seq <= 10; seq++) await g.redis.publish(channel, live(seq));
    for (let seq = 21; seq <= 25; seq++) await g.redis.publish(channel, live(seq));
    await eventually(() => client.frames.filter((f) => f.type === 'chat.delta').length === 15);
    client.socket.send(JSON.stringify({ type: 'chat.resume', chatId: CHAT, messageId: MESSAGE_ID, after: 10 }));
    await eventually(() => client.frames.some((f) => f.type === 'chat.done'), 5000);
    const seqs = client.frames.filter((f) => f.type === 'chat.delta' || f.type === 'chat.done').map((f) => f.seq!);
    expect([...seqs].sort((a, b) => a - b)).toEqual(Array.from({ length: 26 }, (_, i) => i + 1));
    client.socket.close();
  });

  it('says so when a replay ends before the reply does (its live events were held back for it)', async () => {
    const { url } = await gatewayWith((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end('id: 3\nevent: delta\ndata: {"text":"x"}\n\n');
    });
    const client = new Client(url, await auth.sign({ sub: `u-${randomUUID()}` }));
    await client.ready();
    const messageId = randomUUID();
    client.socket.send(JSON.stringify({ type: 'chat.resume', chatId: CHAT, messageId, after: 2 }));
    await eventually(() => client.frames.some((f) => f.type === 'chat.error'), 5000);
    expect(client.frames.find((f) => f.type === 'chat.error')).toMatchObject({ messageId, code: 'resume_incomplete' });
    client.socket.close();
  });

  it('resumes a reply whose characters straddle chat’s network writes without corrupting them', async () => {
    const text = 'naïve € 漢字 🙂 '.repeat(50);
    const { url } = await gatewayWith((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const bytes = Buffer.from(`id: 1\nevent: delta\ndata: ${JSON.stringify({ text })}\n\nid: 2\nevent: done\ndata: {}\n\n`);
      // Seven-byte writes, a pause between each: most characters arrive in two reads.
      let at = 0;
      const next = () => {
        if (at >= bytes.length) return void res.end();
        res.write(bytes.subarray(at, (at += 7)));
        setTimeout(next, 1);
      };
      next();
    });
    const client = new Client(url, await auth.sign({ sub: `u-${randomUUID()}` }));
    await client.ready();
    client.socket.send(JSON.stringify({ type: 'chat.resume', chatId: CHAT, messageId: randomUUID(), after: 0 }));
    await eventually(() => client.frames.some((f) => f.type === 'chat.done'), 10_000);
    expect(client.frames.find((f) => f.type === 'chat.delta')).toMatchObject({ seq: 1, data: { text } });
    client.socket.close();
  });

  it('a resume bigger than the socket’s buffer waits for a reader that paused instead of dropping it', async () => {
    const count = 1200;
    const { url } = await gatewayWith((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      // The whole journal at once, as chat replays a finished reply: ≈ 19 MiB, more than loopback's
      // socket buffers hold, so the gateway's own buffer fills unless it waits.
      for (let seq = 1; seq <= count; seq++) res.write(`id: ${seq}\nevent: delta\ndata: ${JSON.stringify({ text: 'y'.repeat(16 * 1024) })}\n\n`);
      res.end();
    }, { WS_MAX_BUFFERED_BYTES: '65536' });
    const client = new Client(url, await auth.sign({ sub: `u-${randomUUID()}` }));
    await client.ready();
    rawSocket(client).pause();
    client.socket.send(JSON.stringify({ type: 'chat.resume', chatId: CHAT, messageId: randomUUID(), after: 0 }));
    await new Promise((r) => setTimeout(r, 1500));
    rawSocket(client).resume();
    await eventually(() => client.frames.filter((f) => f.type === 'chat.delta').length === count || client.closed !== undefined, 15_000);
    expect(client.closed).toBeUndefined();
    expect(client.frames.filter((f) => f.type === 'chat.delta').map((f) => f.seq)).toEqual(Array.from({ length: count }, (_, i) => i + 1));
    client.socket.close();
  }, 30_000);

  it('answers a chat.send whose stream ends before naming a reply with chat.error for its requestId', async () => {
    const { url } = await gatewayWith((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(': nothing follows\n\n');
    });
    const client = new Client(url, await auth.sign({ sub: `u-${randomUUID()}` }));
    await client.ready();
    client.socket.send(JSON.stringify({ type: 'chat.send', requestId: 'r-1', chatId: CHAT, content: 'hello' }));
    await eventually(() => client.frames.some((f) => f.type === 'chat.error'));
    expect(client.frames.find((f) => f.type === 'chat.error')).toMatchObject({ requestId: 'r-1', code: 'send_failed' });
    client.socket.close();
  });

  it('answers a frame before the first-frame credential with unauthenticated, and a second credential with already_authenticated', async () => {
    const token = await auth.sign({ sub: `u-${randomUUID()}` });
    const socket = new WebSocket(wsUrl, { headers: { origin: ORIGIN } });
    const frames: Frame[] = [];
    socket.on('message', (data) => frames.push(JSON.parse(data.toString()) as Frame));
    socket.on('error', () => undefined);
    await new Promise((resolve) => socket.once('open', resolve));
    socket.send(JSON.stringify({ type: 'chat.cancel', chatId: CHAT, messageId: randomUUID() }));
    await eventually(() => frames.some((f) => f.type === 'error'));
    expect(frames).toEqual([expect.objectContaining({ type: 'error', code: 'unauthenticated' })]);
    socket.send(JSON.stringify({ type: 'auth', token }));
    await eventually(() => frames.some((f) => f.type === 'ready'));
    socket.send(JSON.stringify({ type: 'auth', token }));
    await eventually(() => frames.filter((f) => f.type === 'error').length === 2);
    expect(frames.at(-1)).toEqual({ type: 'error', code: 'already_authenticated' });
    // Still open and served.
    socket.send(JSON.stringify({ type: 'ping' }));
    await eventually(() => frames.some((f) => f.type === 'pong'));
    socket.close();
  });

  it('takes the header credential in any case of "Bearer", and holds frames sent before it is checked', async () => {
    const cancels: string[] = [];
    const { url } = await gatewayWith((req, res) => {
      cancels.push(req.url ?? '');
      res.writeHead(202, { 'content-type': 'application/json' }).end('{}');
    });
    const token = await auth.sign({ sub: `u-${randomUUID()}` });
    const socket = new WebSocket(url, { headers: { origin: ORIGIN, authorization: `bearer ${token}` } });
    const frames: Frame[] = [];
    socket.on('message', (data) => frames.push(JSON.parse(data.toString()) as Frame));
    socket.on('error', () => undefined);
    // Sent the moment the socket opens, while the gateway is still checking the token.
    socket.on('open', () => socket.send(JSON.stringify({ type: 'chat.cancel', chatId: CHAT, messageId: randomUUID() })));
    await eventually(() => cancels.length === 1 && frames.some((f) => f.type === 'ready'));
    expect(frames.filter((f) => f.type === 'error' || f.type === 'chat.error')).toEqual([]);
    socket.close();
  });

  it('drops what is not a reply event on a user channel, and the user’s sockets still get the next one', async () => {
    const userId = `u-${randomUUID()}`;
    const client = new Client(wsUrl, await auth.sign({ sub: userId }));
    await client.ready();
    const channel = `${gw.prefix}user:${userId}`;
    for (const junk of ['null', '1', '"text"', '{}', '{"seq":1,"type":"delta"}', 'not json']) await gw.redis.publish(channel, junk);
    await gw.redis.publish(channel, envelope(userId, 7, 'still here'));
    await eventually(() => client.frames.some((f) => f.type === 'chat.delta'));
    expect(client.frames.filter((f) => f.type === 'chat.delta')).toMatchObject([{ seq: 7, data: { text: 'still here' } }]);
    expect((await fetch(`${gw.url}/api/v1/health`)).status).toBeLessThan(600); // the gateway is still up
    client.socket.close();
  });

  it('closes the connection of an upgrade request to any other path once it is answered', async () => {
    const { createConnection } = await import('node:net');
    const { port } = new URL(gw.url);
    for (const path of ['/api/v1/health', '/no-such-path']) {
      const socket = createConnection(Number(port), '127.0.0.1');
      let answer = '';
      socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
      const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
      socket.on('error', () => undefined);
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
      const outcome = await Promise.race([closed.then(() => 'closed'), new Promise((r) => setTimeout(() => r('still open'), 2000))]);
      socket.destroy();
      expect(outcome, `${path}: ${answer.split('\r\n')[0]}`).toBe('closed');
    }
  });
});

describe('WebSocket fan-out while Redis is away', () => {
  /** A TCP relay to Redis that can be cut (every connection closed, new ones refused) and restored on the same port. */
  async function redisRelay(target: URL) {
    const open = new Set<Socket>();
    let server: Server | undefined;
    let port = 0;
    const listen = () =>
      new Promise<void>((resolve) => {
        server = createNetServer((client) => {
          const upstream = connectNet(Number(target.port || 6379), target.hostname);
          for (const s of [client, upstream]) {
            open.add(s);
            s.on('error', () => undefined);
            s.on('close', () => open.delete(s));
          }
          client.pipe(upstream).pipe(client);
          client.on('close', () => upstream.destroy());
          upstream.on('close', () => client.destroy());
        });
        server.listen(port, '127.0.0.1', () => {
          port = (server!.address() as { port: number }).port;
          resolve();
        });
      });
    await listen();
    return {
      url: () => { const u = new URL(target.href); u.hostname = '127.0.0.1'; u.port = String(port); return u.href; },
      cut: async () => {
        await new Promise<void>((resolve) => { server!.close(() => resolve()); for (const s of open) s.destroy(); });
      },
      restore: listen,
      close: async () => { for (const s of open) s.destroy(); await new Promise<void>((resolve) => (server?.listening ? server.close(() => resolve()) : resolve())); },
    };
  }

  it('a socket whose channel could not be subscribed gets its events once Redis is back, and is told of the gap', async () => {
    const direct = testEnv('gateway', {}).REDIS_URL!;
    const relay = await redisRelay(new URL(direct));
    try {
      const chat = await standIn();
      const g = await startGateway({ AUTH_URL: auth.url, CHAT_URL: chat.url, ADMIN_URL: chat.url, CORS_ORIGINS: ORIGIN, REDIS_URL: relay.url() }, { listen: true });
      const url = `${g.url.replace('http', 'ws')}/api/v1/ws`;
      const early = new Client(url, await auth.sign({ sub: `u-${randomUUID()}` }));
      await early.ready();

      await relay.cut();
      const userId = `u-${randomUUID()}`;
      const late = new Client(url, await auth.sign({ sub: userId }));
      // Its subscription cannot be made: it hears so, and gets `ready` all the same.
      await eventually(() => late.frames.some((f) => f.type === 'error' && f.code === 'fanout_unavailable'), 8000);
      await late.ready();

      await relay.restore();
      await eventually(() => late.frames.some((f) => f.type === 'error' && f.code === 'fanout_interrupted'), 8000);
      await eventually(() => early.frames.some((f) => f.type === 'error' && f.code === 'fanout_interrupted'), 8000);
      const publisher = createRedis(direct, { name: 'gateway-test-publisher' });
      publisher.on('error', () => undefined);
      try {
        await eventually(() => publisher.status === 'ready');
        await eventually(async () => {
          await publisher.publish(`${g.prefix}user:${userId}`, envelope(userId, 1, 'after the outage'));
          return late.frames.some((f) => f.type === 'chat.delta');
        }, 8000);
      } finally {
        publisher.disconnect();
      }
      expect(late.frames.find((f) => f.type === 'chat.delta')).toMatchObject({ data: { text: 'after the outage' } });
      expect(late.closed).toBeUndefined();
      late.socket.close();
      early.socket.close();
    } finally {
      await relay.close();
    }
  }, 30_000);
});
