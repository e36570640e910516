import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { LogCapture, testEnv } from '@vivier/service-kit/testing';
import type { ServiceApp } from '@vivier/service-kit';
import { buildGatewayApp } from '../src/app';
import { loadGatewayConfig } from '../src/config';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

/** A plain HTTP upstream standing in for a service route, to observe what the gateway forwards. */
async function upstream(handler: http.RequestListener): Promise<string> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.push(() => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function gateway(env: Record<string, string>, logs = new LogCapture()): Promise<{ app: ServiceApp; url: string; logs: LogCapture }> {
  const app = await buildGatewayApp(loadGatewayConfig(testEnv('gateway', { LOG_LEVEL: 'info', ...env })), { logStream: logs });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  cleanup.push(() => app.close());
  return { app, url, logs };
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
    const res = await fetch(`${url}/api/v1/chats/c1/messages`, { method: 'POST', headers: { accept: 'text/event-stream' } });
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
    const res = await fetch(`${url}/api/v1/files`, { method: 'POST', body, duplex: 'half', headers: { 'content-type': 'application/octet-stream' } } as RequestInit);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ bytes: 8 * 64 * 1024 });
  });

  it('refuses a body over the limit with 413 before the service sees it', async () => {
    let called = false;
    const chatUrl = await upstream((_req, res) => {
      called = true;
      res.end('{}');
    });
    const { app } = await gateway({ CHAT_URL: chatUrl, BODY_LIMIT_BYTES: '2048' });
    const res = await app.inject({ method: 'POST', url: '/api/v1/chats', payload: 'x'.repeat(4096), headers: { 'content-type': 'application/json' } });
    expect(res.statusCode).toBe(413);
    expect(res.json()).toMatchObject({ code: 'payload_too_large', status: 413 });
    expect(called).toBe(false);
  });

  it('answers 502 upstream_unavailable when a service is down', async () => {
    const { app } = await gateway({ ADMIN_URL: 'http://127.0.0.1:1' });
    const res = await app.inject({ method: 'GET', url: '/api/v1/admin/users' });
    expect(res.statusCode).toBe(502);
    expect(res.json()).toMatchObject({ code: 'upstream_unavailable' });
  });

  it('drops identity headers sent by clients and forwards the request id', async () => {
    let seen: http.IncomingHttpHeaders = {};
    const authUrl = await upstream((req, res) => {
      seen = req.headers;
      res.end('{}');
    });
    const { app } = await gateway({ AUTH_URL: authUrl });
    await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { 'x-vivier-context': 'forged', 'x-vivier-internal': 'forged', 'x-request-id': 'rid-fwd-1' } });
    expect(seen['x-vivier-context']).toBeUndefined();
    expect(seen['x-vivier-internal']).toBeUndefined();
    expect(seen['x-request-id']).toBe('rid-fwd-1');
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
    const res = await fetch(`${url}/api/v1/chats`, { method: 'POST', body, duplex: 'half', headers: { 'content-type': 'application/json' } } as RequestInit);
    expect(res.status).toBe(413);
    expect(((await res.json()) as { code: string }).code).toBe('payload_too_large');
    expect(received).toBeLessThanOrEqual(4096);
  });
});
