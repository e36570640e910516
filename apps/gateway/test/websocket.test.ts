import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuthStandIn, cleanup, eventually, standIn, startGateway, type Gateway } from './support';

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
