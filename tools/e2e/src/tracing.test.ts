import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { dropTestDatabase } from '@vivier/dev-stack/test-infra';
import { startProviderSim } from '@vivier/provider-sim';
import { startStack, type Stack } from './stack';

// The five services as `npm start` runs them, exporting spans over OTLP/HTTP (JSON) to a
// collector this test runs in memory: one chat turn must be one trace, from the gateway through
// chat, the provider's HTTP call, the outbox relay and Kafka, to admin's and the worker's consumers.

interface CollectedSpan {
  service: string;
  scope: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
  links: string[];
}

const KIND = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const;

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
  doubleValue?: number;
  arrayValue?: { values?: OtlpValue[] };
}
const valueOf = (v: OtlpValue): unknown =>
  v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : (v.boolValue ?? v.doubleValue ?? v.arrayValue?.values?.map(valueOf)));
const attributes = (list: Array<{ key: string; value: OtlpValue }> = []) => Object.fromEntries(list.map((a) => [a.key, valueOf(a.value)]));
/** OTLP/JSON ids are hex; accept base64 too, as some encoders write it. */
const hexId = (id: string | undefined) => (!id ? '' : /^[0-9a-f]+$/i.test(id) ? id.toLowerCase() : Buffer.from(id, 'base64').toString('hex'));

/** An OTLP/HTTP trace receiver (`POST /v1/traces`, JSON), keeping every span in memory. */
async function startCollector(): Promise<{ url: string; spans: CollectedSpan[]; close(): Promise<void> }> {
  const spans: CollectedSpan[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      if (req.url !== '/v1/traces' || !String(req.headers['content-type']).includes('json')) {
        res.writeHead(415).end();
        return;
      }
      const payload = JSON.parse(body) as {
        resourceSpans: Array<{
          resource: { attributes: Array<{ key: string; value: OtlpValue }> };
          scopeSpans: Array<{ scope: { name: string }; spans: Array<{ traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number; attributes?: Array<{ key: string; value: OtlpValue }>; links?: Array<{ spanId: string }> }> }>;
        }>;
      };
      for (const rs of payload.resourceSpans) {
        const service = String(attributes(rs.resource.attributes)['service.name']);
        for (const ss of rs.scopeSpans) {
          for (const s of ss.spans) {
            spans.push({
              service,
              scope: ss.scope.name,
              traceId: hexId(s.traceId),
              spanId: hexId(s.spanId),
              parentSpanId: hexId(s.parentSpanId),
              name: s.name,
              kind: s.kind,
              attributes: attributes(s.attributes),
              links: (s.links ?? []).map((l) => hexId(l.spanId)),
            });
          }
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    spans,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

let stack: Stack | undefined;
afterEach(() => {
  // The whole group: a stack left running would load every later test of the run.
  stack?.kill();
  stack = undefined;
});

describe('OpenTelemetry tracing', () => {
  it('makes one chat turn one trace across gateway, chat, the provider, Kafka, admin and worker', async () => {
    const collector = await startCollector();
    const sim = await startProviderSim({ port: 0 });
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vivier-tracing-'));
    const providersFile = path.join(dir, 'providers.json');
    writeFileSync(providersFile, JSON.stringify({ providers: { openai: { baseUrl: `${sim.url}/v1`, apiKey: 'sk-sim' } } }));
    try {
      stack = await startStack(
        {
          OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
          OTEL_BSP_SCHEDULE_DELAY: '100',
          PROVIDERS_FILE: providersFile,
          CHAT_DEFAULT_MODEL: 'openai/gpt-4o-mini',
        },
        'tracing',
      );
      const base = `http://127.0.0.1:${stack.ports.gateway}`;
      const registered = await fetch(`${base}/api/v1/auth/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: `tracing-${Date.now()}@example.com`, password: 'a password for tracing' }),
      });
      expect(registered.status).toBe(201);
      const { accessToken } = (await registered.json()) as { accessToken: string };
      const auth = { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' };
      // The chat is made in a trace of its own, and the turn starts once admin and the worker have
      // consumed its event: a consumer processes a run of records as one span in the first record's
      // trace (the others linked), so a turn whose events joined the chat's run would be traced
      // under the chat's trace instead of its own.
      const setupTraceId = randomBytes(16).toString('hex');
      const chat = (await (
        await fetch(`${base}/api/v1/chats`, { method: 'POST', headers: { ...auth, traceparent: `00-${setupTraceId}-${randomBytes(8).toString('hex')}-01` }, body: '{}' })
      ).json()) as { id: string };
      const consumedSetup = (service: string) => collector.spans.some((s) => s.traceId === setupTraceId && s.service === service && s.kind === KIND.consumer && s.name === 'process chat.events');
      await expect.poll(() => consumedSetup('vivier-admin') && consumedSetup('vivier-worker'), { timeout: 60_000, interval: 100 }).toBe(true);

      // The client's own trace context: the turn continues it.
      const traceId = randomBytes(16).toString('hex');
      const clientSpanId = randomBytes(8).toString('hex');
      const sse = await fetch(`${base}/api/v1/chats/${chat.id}/messages`, {
        method: 'POST',
        headers: { ...auth, accept: 'text/event-stream', traceparent: `00-${traceId}-${clientSpanId}-01` },
        body: JSON.stringify({ content: 'Tell me about tracing.' }),
      });
      expect(await sse.text()).toContain('event: done');

      const inTrace = () => collector.spans.filter((s) => s.traceId === traceId);
      const has = (predicate: (s: CollectedSpan) => boolean) => inTrace().some(predicate);
      // A span is exported when it ends, children before their parents, in batches from five
      // processes: wait until the consumers' work is in and every parent has arrived.
      const orphans = () => {
        const ids = new Set(inTrace().map((s) => s.spanId));
        return inTrace().filter((s) => s.parentSpanId !== clientSpanId && !ids.has(s.parentSpanId));
      };
      await expect
        .poll(
          () =>
            has((s) => s.service === 'vivier-admin' && s.kind === KIND.consumer && s.name === 'process chat.events') &&
            has((s) => s.service === 'vivier-worker' && s.kind === KIND.consumer && s.name === 'process chat.events') &&
            has((s) => s.service === 'vivier-chat' && s.kind === KIND.consumer && s.name === 'process worker.events') &&
            orphans().length === 0,
          { timeout: 60_000, interval: 250 },
        )
        .toBe(true)
        .catch((error: unknown) => {
          const all = collector.spans.map((s) => `${s.service} ${s.name} ${s.traceId === traceId ? '(this trace)' : s.traceId.slice(0, 6)}`);
          throw new Error(`${(error as Error).message}: spans ${JSON.stringify(all.slice(-80))}\n${stack!.output().slice(-3000)}`);
        });
      const spans = inTrace();
      const one = (predicate: (s: CollectedSpan) => boolean, what: string) => {
        const found = spans.find(predicate);
        expect(found, `${what} in ${JSON.stringify(spans.map((s) => `${s.service} ${s.name} ${s.kind} ${s.spanId} <- ${s.parentSpanId}`))}`).toBeDefined();
        return found!;
      };

      // One tree under the client's span (the poll above waited for no orphans).
      expect(spans.filter((s) => s.parentSpanId === clientSpanId)).toHaveLength(1);
      expect(new Set(spans.map((s) => s.service))).toEqual(new Set(['vivier-gateway', 'vivier-chat', 'vivier-admin', 'vivier-worker']));

      // gateway → chat over HTTP
      const edge = one((s) => s.service === 'vivier-gateway' && s.kind === KIND.server, 'the gateway request');
      expect(edge.parentSpanId).toBe(clientSpanId);
      expect(edge.attributes['http.route']).toBeDefined();
      const proxied = one((s) => s.service === 'vivier-gateway' && s.kind === KIND.client && s.attributes['http.request.method'] === 'POST' && s.parentSpanId === edge.spanId, 'the proxied call');
      // The gateway's rate limit check in Redis is part of the request.
      one((s) => s.service === 'vivier-gateway' && s.attributes['db.system.name'] === 'redis' && s.parentSpanId === edge.spanId, 'the rate limit check');
      const chatServer = one((s) => s.service === 'vivier-chat' && s.kind === KIND.server && s.parentSpanId === proxied.spanId, 'chat handling it');
      expect(chatServer.name).toMatch(/^POST \/api\/v1\/chats\/:\w+\/messages$/);
      expect(chatServer.attributes['http.response.status_code']).toBe(200);

      // chat → the provider (its attempt, and the HTTP call under it), PostgreSQL and Redis
      const attempt = one((s) => s.service === 'vivier-chat' && s.name === 'chat gpt-4o-mini', 'the provider attempt');
      expect(attempt.attributes).toMatchObject({ 'gen_ai.provider.name': 'openai', 'gen_ai.request.model': 'gpt-4o-mini' });
      expect(attempt.attributes['gen_ai.usage.output_tokens']).toBeGreaterThan(0);
      const providerCall = one((s) => s.kind === KIND.client && s.parentSpanId === attempt.spanId, 'the provider HTTP call');
      expect(providerCall.attributes['url.full']).toBe(`${sim.url}/v1/chat/completions`);
      expect(providerCall.attributes['http.response.status_code']).toBe(200);
      one((s) => s.service === 'vivier-chat' && s.attributes['db.system.name'] === 'postgresql' && /insert into chat\.outbox/.test(String(s.attributes['db.query.text'])), 'chat writing its outbox');
      one((s) => s.service === 'vivier-chat' && s.attributes['db.system.name'] === 'redis', 'a Redis command');

      // chat's outbox → Kafka → admin and worker
      const sends = spans.filter((s) => s.service === 'vivier-chat' && s.kind === KIND.producer && s.name === 'send chat.events');
      expect(sends.length).toBeGreaterThan(0);
      const sendIds = new Set(sends.map((s) => s.spanId));
      for (const group of ['vivier-admin', 'vivier-worker']) {
        const consumed = spans.filter((s) => s.service === group && s.kind === KIND.consumer);
        expect(consumed.some((s) => sendIds.has(s.parentSpanId) || s.links.some((l) => sendIds.has(l))), group).toBe(true);
        // What a consumer does inside the record's transaction is part of the trace too.
        expect(spans.some((s) => s.service === group && s.attributes['db.system.name'] === 'postgresql' && consumed.some((c) => c.spanId === s.parentSpanId))).toBe(true);
      }

      stack.child.kill('SIGINT');
      expect(await stack.exited).toBe(0);
    } finally {
      if (stack && stack.child.exitCode === null) stack.kill();
      await sim.close();
      await collector.close();
      if (stack) await dropTestDatabase(stack.database).catch(() => undefined);
    }
  }, 240_000);
});
