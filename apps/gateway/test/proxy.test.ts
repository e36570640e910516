import type http from 'node:http';
import { request as httpRequest } from 'node:http';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuthStandIn, bearer, cleanup, standIn, startGateway } from './support';

afterEach(cleanup);

/** A plain HTTP upstream standing in for a service route, to observe what the gateway forwards. */
async function upstream(handler: http.RequestListener): Promise<string> {
  return (await standIn(handler)).url;
}

let auth: AuthStandIn;
let token: string;
beforeEach(async () => {
  auth = await AuthStandIn.start();
  token = await auth.sign({ role: 'admin' });
});

async function gateway(env: Record<string, string>) {
  return startGateway({ AUTH_URL: auth.url, ...env }, { listen: true });
}

describe('gateway proxy', () => {
  it('streams an SSE response chunk by chunk without buffering', async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const chatUrl = await upstream(async (req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write('id: 1\nevent: delta\ndata: {"text":"Hel"}\n\n');
      await released; // the second chunk is only sent once the client has seen the first
      res.end('id: 2\nevent: done\ndata: {}\n\n');
    });
    const { url } = await gateway({ CHAT_URL: chatUrl });
    const res = await fetch(`${url}/api/v1/chats/c1/messages`, {
      method: 'POST',
      headers: { accept: 'text/event-stream', ...bearer(token) },
    });
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toContain('"Hel"');
    release();
    let rest = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += new TextDecoder().decode(value);
    }
    expect(rest).toContain('event: done');
  });

  it('ends the request to the service when the client goes away before any answer, and still reuses its pool', async () => {
    let arrived!: () => void;
    const arrival = new Promise<void>((r) => (arrived = r));
    const closes: number[] = [];
    const chatUrl = await upstream((req, res) => {
      if (req.url === '/v1/models') return void res.end('{"object":"list","data":[]}');
      arrived();
      // A non-streamed completion: nothing is sent until the provider is done (never, here).
      res.on('close', () => closes.push(Date.now()));
    });
    const { url } = await gateway({ CHAT_URL: chatUrl });
    const client = new AbortController();
    const pending = fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...bearer(token) },
      body: JSON.stringify({ model: 'openai/slow', messages: [{ role: 'user', content: 'hi' }] }),
      signal: client.signal,
    }).catch(() => undefined);
    await arrival;
    const goneAt = Date.now();
    client.abort();
    await pending;
    await expect.poll(() => closes.length, { timeout: 2000, interval: 10 }).toBe(1);
    expect(closes[0]! - goneAt).toBeLessThan(1000);
    // The gateway itself carries on.
    const after = await fetch(`${url}/v1/models`, { headers: bearer(token) });
    expect(after.status).toBe(200);
  });

  it('answers other requests while more SSE streams are open to the service than the old pool cap (128)', async () => {
    const chatUrl = await upstream((req, res) => {
      if (req.url?.endsWith('/stream')) {
        // A reply that keeps streaming: it holds its connection.
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(': open\n\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"items":[]}');
    });
    const { url } = await gateway({ CHAT_URL: chatUrl });
    const clients = new AbortController();
    const streams = await Promise.all(
      Array.from({ length: 140 }, (_, i) =>
        fetch(`${url}/api/v1/chats/c${i}/messages/m${i}/stream`, { headers: bearer(token), signal: clients.signal }),
      ),
    );
    try {
      expect(streams.every((s) => s.status === 200)).toBe(true);
      const started = Date.now();
      const list = await fetch(`${url}/api/v1/chats`, { headers: bearer(token), signal: AbortSignal.timeout(5000) });
      expect(list.status).toBe(200);
      expect(Date.now() - started).toBeLessThan(1000);
    } finally {
      clients.abort();
    }
  });

  it('streams a request body to the service while the client is still sending', async () => {
    let firstChunkSeen!: () => void;
    const seen = new Promise<void>((r) => (firstChunkSeen = r));
    const chatUrl = await upstream((req, res) => {
      let bytes = 0;
      req.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        firstChunkSeen();
      });
      req.on('end', () => res.end(JSON.stringify({ bytes })));
    });
    const { url } = await gateway({ CHAT_URL: chatUrl });
    const chunk = new Uint8Array(64 * 1024).fill(97);
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent === 1) await seen; // the service saw bytes before the upload finished
        if (sent === 8) return controller.close();
        sent += 1;
        controller.enqueue(chunk);
      },
    });
    const res = await fetch(`${url}/api/v1/files`, {
      method: 'POST',
      body,
      duplex: 'half',
      headers: { 'content-type': 'application/octet-stream', ...bearer(token) },
    } as RequestInit);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ bytes: 8 * 64 * 1024 });
  });

  it('refuses a body over the limit with 413 before the service sees it (and before credentials)', async () => {
    let called = false;
    const chatUrl = await upstream((_req, res) => {
      called = true;
      res.end('{}');
    });
    const { app } = await gateway({ CHAT_URL: chatUrl, BODY_LIMIT_BYTES: '2048' });
    const res = await app.inject({
      method: 'POST',
      url: '/api/v1/chats',
      payload: 'x'.repeat(4096),
      headers: { 'content-type': 'application/json' },
    });
    expect(res.statusCode).toBe(413);
    expect(res.json()).toMatchObject({ code: 'payload_too_large', status: 413 });
    expect(called).toBe(false);
  });

  it("refuses a body over the limit with 413 on the gateway's own routes too", async () => {
    const services = await standIn((_req, res) => res.end('{"status":"ready","checks":{}}'));
    const { app } = await gateway({
      CHAT_URL: services.url,
      ADMIN_URL: services.url,
      BODY_LIMIT_BYTES: '2048',
    });
    for (const url of ['/api/v1/health', '/docs/json']) {
      const res = await app.inject({
        method: 'POST',
        url,
        payload: 'x'.repeat(4096),
        headers: { 'content-type': 'application/json' },
      });
      expect(res.statusCode).toBe(413);
      expect(res.json()).toMatchObject({ code: 'payload_too_large' });
    }
    expect(services.requests).toEqual([]);
  });

  it('reports each service on the public health route without the error texts of its checks', async () => {
    const services = await standIn((_req, res) => {
      res.statusCode = 503;
      res.end(JSON.stringify({ status: 'unavailable', checks: { postgres: { status: 'down', critical: true, error: 'connect ECONNREFUSED 10.4.0.12:5432 (role chat_rw)', latencyMs: 3 } } }));
    });
    const { app } = await gateway({ CHAT_URL: services.url, ADMIN_URL: 'http://127.0.0.1:1' });
    const res = await app.inject({ method: 'GET', url: '/api/v1/health' });
    expect(res.statusCode).toBe(503);
    expect(res.json().services.chat).toEqual({ httpStatus: 503, status: 'unavailable', checks: { postgres: { status: 'down', critical: true } } });
    expect(res.json().services.admin).toEqual({ httpStatus: 0, status: 'unavailable' });
    expect(res.body).not.toMatch(/10\.4\.0\.12|chat_rw|127\.0\.0\.1|ECONNREFUSED/);
  });

  it('answers 502 upstream_unavailable when a service is down', async () => {
    const { app } = await gateway({ ADMIN_URL: 'http://127.0.0.1:1' });
    const res = await app.inject({ method: 'GET', url: '/api/v1/admin/users', headers: bearer(token) });
    expect(res.statusCode).toBe(502);
    expect(res.json()).toMatchObject({ code: 'upstream_unavailable' });
  });

  it('answers 504 upstream_timeout when a service takes its request but never answers within UPSTREAM_TIMEOUT_MS', async () => {
    const silent = await standIn(() => undefined); // reads the request, never writes
    const { app } = await gateway({ ADMIN_URL: silent.url, UPSTREAM_TIMEOUT_MS: '1000' });
    const res = await app.inject({ method: 'GET', url: '/api/v1/admin/users', headers: bearer(token) });
    expect(res.statusCode).toBe(504);
    expect(res.json()).toMatchObject({ status: 504, code: 'upstream_timeout' });
    expect(silent.requests).toHaveLength(1);
  });

  it('drops identity headers and credentials sent by clients and forwards the request id', async () => {
    let seen: http.IncomingHttpHeaders = {};
    const chatUrl = await upstream((req, res) => {
      seen = req.headers;
      res.end('{}');
    });
    const { app } = await gateway({ CHAT_URL: chatUrl });
    await app.inject({
      method: 'GET',
      url: '/api/v1/chats',
      headers: {
        'x-vivier-context': 'forged',
        'x-vivier-internal': 'forged',
        'x-request-id': 'rid-fwd-1',
        ...bearer(token),
      },
    });
    expect(seen['x-vivier-context']).not.toBe('forged');
    expect(seen['x-vivier-internal']).toBeUndefined();
    expect(seen.authorization).toBeUndefined();
    expect(seen['x-request-id']).toBe('rid-fwd-1');
  });
});

describe('gateway forwarding', () => {
  /** A request over a raw connection: fetch would refuse to send connection-level headers. */
  function rawRequest(url: string, path: string, headers: Record<string, string>): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(`${url}${path}`, { headers }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      req.on('error', reject);
      req.end();
    });
  }

  it('passes no connection-level headers across the hop, either way, including those the Connection header names', async () => {
    let seen: http.IncomingHttpHeaders = {};
    const chatUrl = await upstream((req, res) => {
      seen = req.headers;
      res.writeHead(200, {
        'content-type': 'application/json',
        connection: 'keep-alive, x-upstream-hop',
        'keep-alive': 'timeout=1',
        'x-upstream-hop': 'hop',
        'x-powered-by': 'chat',
        'x-end-to-end': 'kept',
      });
      res.end('{"items":[]}');
    });
    const { url } = await gateway({ CHAT_URL: chatUrl });
    const res = await rawRequest(url, '/api/v1/chats', {
      ...bearer(token),
      connection: 'keep-alive, x-client-hop',
      'keep-alive': 'timeout=30',
      'x-client-hop': 'hop',
      'proxy-authorization': 'Basic Zm9vOmJhcg==',
      'x-client-end-to-end': 'kept',
    });
    expect(res.status).toBe(200);
    expect(res.body).toBe('{"items":[]}');
    expect(seen['x-client-hop']).toBeUndefined();
    expect(seen['proxy-authorization']).toBeUndefined();
    expect(seen['keep-alive']).toBeUndefined();
    expect(seen['x-client-end-to-end']).toBe('kept');
    expect(seen.host).toBe(new URL(chatUrl).host);
    expect(res.headers['x-upstream-hop']).toBeUndefined();
    expect(res.headers['keep-alive']).not.toBe('timeout=1');
    expect(res.headers['x-powered-by']).toBeUndefined();
    expect(res.headers['x-end-to-end']).toBe('kept');
    // The edge's own headers are on the forwarded answer too.
    expect(res.headers['x-content-type-options']).toBe('nosniff');
  });

  it("adds the service's Vary to the edge's (CORS varies on Origin) instead of replacing it", async () => {
    const chatUrl = await upstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', vary: 'Accept-Language' });
      res.end('{"items":[]}');
    });
    const { url } = await gateway({ CHAT_URL: chatUrl, CORS_ORIGINS: 'https://app.example.test' });
    const res = await fetch(`${url}/api/v1/chats`, { headers: { origin: 'https://app.example.test', ...bearer(token) } });
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBe('https://app.example.test');
    const vary = (res.headers.get('vary') ?? '').toLowerCase().split(/\s*,\s*/);
    expect(vary).toEqual(expect.arrayContaining(['origin', 'accept-language']));
  });

  it('forwards under the path of a service URL that has one, query string included', async () => {
    const chatUrl = await upstream((req, res) => res.end(JSON.stringify({ url: req.url })));
    const { url } = await gateway({ CHAT_URL: `${chatUrl}/internal/` });
    const res = await fetch(`${url}/api/v1/chats?limit=5&cursor=a%2Fb`, { headers: bearer(token) });
    expect(await res.json()).toEqual({ url: '/internal/api/v1/chats?limit=5&cursor=a%2Fb' });
  });

  it('ends the request to the service within a second when the client goes away in the middle of a streamed answer', async () => {
    const closes: number[] = [];
    const chatUrl = await upstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('event: delta\ndata: {"text":"Hel"}\n\n');
      res.on('close', () => closes.push(Date.now()));
    });
    const { url } = await gateway({ CHAT_URL: chatUrl });
    // Its own connection (no pool that would open another one behind it), destroyed after the first event.
    const client = httpRequest(`${url}/api/v1/chats/c1/messages`, { method: 'POST', headers: bearer(token), agent: false });
    client.on('error', () => undefined);
    const first = new Promise<string>((resolve) => client.on('response', (res) => res.once('data', (c: Buffer) => resolve(c.toString()))));
    client.end();
    expect(await first).toContain('"Hel"');
    const goneAt = Date.now();
    client.destroy();
    await expect.poll(() => closes.length, { timeout: 2000, interval: 10 }).toBe(1);
    expect(closes[0]! - goneAt).toBeLessThan(1000);
  });

  it('stops reading from the service while the client reads nothing (backpressure), and carries on when it reads', async () => {
    const chunk = Buffer.alloc(1024 * 1024, 120);
    const total = 256;
    let written = 0;
    let stalled!: (bytes: number) => void;
    const stall = new Promise<number>((r) => (stalled = r));
    const chatUrl = await upstream(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total * chunk.length) });
      while (written < total) {
        written += 1;
        if (res.write(chunk)) continue;
        // Full: wait for the gateway to read more, or notice that it stopped reading.
        const drained = await Promise.race([
          new Promise<boolean>((r) => res.once('drain', () => r(true))),
          new Promise<boolean>((r) => setTimeout(() => r(false), 500)),
        ]);
        if (!drained) {
          stalled(written);
          await new Promise<void>((r) => res.once('drain', () => r()));
        }
      }
      res.end();
    });
    const { url } = await gateway({ CHAT_URL: chatUrl });
    const res = await fetch(`${url}/api/v1/exports/e1/file`, { headers: bearer(token) });
    expect(res.status).toBe(200);
    // Nothing read yet: the service is held back within a few socket buffers, not 256 MiB.
    const writtenWhenStalled = await stall;
    expect(writtenWhenStalled).toBeLessThan(64);
    let received = 0;
    for await (const part of res.body!) received += (part as Uint8Array).length;
    expect(received).toBe(total * chunk.length);
  });
});

describe('gateway body limit on streamed bodies', () => {
  it('stops a chunked body that grows past the limit with 413', async () => {
    let received = 0;
    const chatUrl = await upstream((req, res) => {
      req.on('data', (c: Buffer) => (received += c.length));
      req.on('end', () => res.end('{}'));
      req.on('error', () => undefined);
    });
    const { url } = await gateway({ CHAT_URL: chatUrl, BODY_LIMIT_BYTES: '4096' });
    const chunk = new Uint8Array(1024).fill(98);
    let n = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (n++ === 16) return controller.close();
        controller.enqueue(chunk);
      },
    });
    const res = await fetch(`${url}/api/v1/chats`, {
      method: 'POST',
      body,
      duplex: 'half',
      headers: { 'content-type': 'application/json', ...bearer(token) },
    } as RequestInit);
    expect(res.status).toBe(413);
    expect(((await res.json()) as { code: string }).code).toBe('payload_too_large');
    expect(received).toBeLessThanOrEqual(4096);
  });

  it('closes the connection after a 413 while the client is still sending (the rest of its body is never read)', async () => {
    const chatUrl = await upstream((req, res) => {
      req.resume();
      req.on('end', () => res.end('{}'));
      req.on('error', () => undefined);
    });
    const { url } = await gateway({ CHAT_URL: chatUrl, BODY_LIMIT_BYTES: '4096' });
    const chunk = new Uint8Array(1024).fill(98);
    const client = new AbortController();
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        await new Promise((r) => setTimeout(r, 5)); // never ends: the upload outlasts the answer
        controller.enqueue(chunk);
      },
    });
    const res = await fetch(`${url}/api/v1/chats`, {
      method: 'POST',
      body,
      duplex: 'half',
      signal: client.signal,
      headers: { 'content-type': 'application/json', ...bearer(token) },
    } as RequestInit);
    expect(res.status).toBe(413);
    expect(res.headers.get('connection')).toBe('close');
    client.abort();
  });
});
