import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTracing, stopTracing } from '@vivier/service-kit';
import { AuthStandIn, bearer, cleanup, standIn, startGateway } from './support';

// Tracing is process-wide: this file turns it on for its own worker, with an exporter that keeps nothing.
beforeAll(() => {
  startTracing('gateway', { exporter: { export: (_spans: unknown, done: (result: { code: number }) => void) => done({ code: 0 }), shutdown: async () => undefined } as never });
});
afterAll(async () => {
  await stopTracing();
});
afterEach(cleanup);

describe('gateway logs with tracing on', () => {
  it('logs a failed request to a service with the trace of the request that failed, on a connection another request opened', async () => {
    const auth = await AuthStandIn.start();
    const token = await auth.sign({ role: 'user' });
    let served = 0;
    // The first request opens the pooled connection and is answered; the second, on the same connection, is cut.
    const chat = await standIn((req, res) => {
      served += 1;
      if (served === 1) res.end('{"items":[]}');
      else req.socket.destroy();
    });
    const gw = await startGateway({ AUTH_URL: auth.url, CHAT_URL: chat.url }, { listen: true });
    const traceparent = (traceId: string) => `00-${traceId}-${randomBytes(8).toString('hex')}-01`;
    const first = randomBytes(16).toString('hex');
    expect((await fetch(`${gw.url}/api/v1/chats`, { headers: { ...bearer(token), traceparent: traceparent(first) } })).status).toBe(200);
    const second = randomBytes(16).toString('hex');
    const res = await fetch(`${gw.url}/api/v1/chats`, { headers: { ...bearer(token), traceparent: traceparent(second) } });
    expect(res.status).toBe(502);
    const failed = gw.logs.lines.filter((l) => l.msg === 'upstream request failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]!.traceId).toBe(second);
  });
});
