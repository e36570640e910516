import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace';
import { request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LogCapture } from './testing';
import { createServiceApp, type ServiceApp } from './app';
import { createPool, databasePlugin, statementOperation } from './database';
import { createRedis, redisPlugin } from './redis';
import { samplerFromEnv, startTracing, stopTracing, tracingEnabled } from './tracing';

// Tracing inside one service, with the SDK's in-memory exporter: the request's SERVER span, the
// PostgreSQL, Redis and outgoing HTTP spans under it, `traceparent` continued in and injected out,
// trace ids on the log lines. The whole chain across services and Kafka is tools/e2e/src/tracing.test.ts.

const exporter = new InMemorySpanExporter();
let app: ServiceApp | undefined;
let upstream: http.Server;
let upstreamUrl = '';
const seenTraceparents: Array<string | undefined> = [];

beforeAll(async () => {
  upstream = http.createServer((req, res) => {
    seenTraceparents.push(req.headers.traceparent as string | undefined);
    res.end('ok');
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await stopTracing();
  await new Promise((resolve) => upstream.close(resolve));
});
afterEach(async () => {
  await app?.close();
  app = undefined;
  exporter.reset();
});

async function build(logs = new LogCapture()) {
  app = await createServiceApp({ service: 'traced', logLevel: 'info', logStream: logs, defaultMetrics: false });
  await app.register(databasePlugin, { pool: createPool({ url: process.env.VIVIER_TEST_DATABASE_ADMIN_URL!, poolMax: 2, applicationName: 'tracing-test' }) });
  await app.register(redisPlugin, { redis: createRedis(process.env.REDIS_URL!, { keyPrefix: process.env.VIVIER_TEST_REDIS_PREFIX, name: 'tracing-test' }) });
  app.get('/work', async (req) => {
    await app!.pg.query('select 1 as one');
    await app!.redis.set('tracing-test', '1', 'EX', 10);
    const res = await request(`${upstreamUrl}/downstream?secret=not-in-spans`);
    await res.body.text();
    req.log.info('did the work');
    return { ok: true };
  });
  await app.ready();
  // Commands fail fast while the connection is still being made (no offline queue).
  await expect.poll(() => app!.redis.status, { timeout: 10_000 }).toBe('ready');
  return { app, logs };
}

describe('tracing off (the default)', () => {
  it('stays off without an exporter or endpoint, and with OTEL_SDK_DISABLED', () => {
    expect(startTracing('traced', { env: {} })).toBe(false);
    expect(startTracing('traced', { env: { OTEL_TRACES_EXPORTER: 'none' } })).toBe(false);
    expect(startTracing('traced', { env: { OTEL_SDK_DISABLED: 'true', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' } })).toBe(false);
    expect(tracingEnabled()).toBe(false);
    expect(() => startTracing('traced', { env: { OTEL_TRACES_EXPORTER: 'zipkin' } })).toThrow(/unknown exporter "zipkin"/);
  });

  it('reads the standard sampler variables', () => {
    expect(samplerFromEnv({}).toString()).toMatch(/ParentBased\{root=AlwaysOnSampler/);
    expect(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.25' }).toString()).toMatch(/TraceIdRatioBased\{0\.25\}/);
    expect(() => samplerFromEnv({ OTEL_TRACES_SAMPLER: 'sometimes' })).toThrow(/unknown sampler/);
  });
});

describe('tracing on (in-memory exporter)', () => {
  beforeAll(() => {
    expect(startTracing('traced', { exporter })).toBe(true);
  });

  it('gives a request one SERVER span continuing the caller, with its database, Redis and HTTP calls under it', async () => {
    const { app, logs } = await build();
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const res = await app.inject({ method: 'GET', url: '/work?x=1', headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } });
    expect(res.statusCode).toBe(200);
    await expect.poll(() => exporter.getFinishedSpans().some((s) => s.name === 'GET /work')).toBe(true);
    const spans = exporter.getFinishedSpans();
    const server = spans.find((s) => s.name === 'GET /work')!;
    expect(server.spanContext().traceId).toBe(traceId);
    expect(server.parentSpanContext?.spanId).toBe('00f067aa0ba902b7');
    expect(server.instrumentationScope.name).toBe('@vivier/traced');
    expect(server.attributes).toMatchObject({ 'http.request.method': 'GET', 'http.route': '/work', 'url.path': '/work', 'http.response.status_code': 200 });

    const children = spans.filter((s) => s.parentSpanContext?.spanId === server.spanContext().spanId);
    const query = children.find((s) => s.attributes['db.system.name'] === 'postgresql')!;
    expect(query).toMatchObject({ name: 'SELECT', attributes: { 'db.query.text': 'select 1 as one', 'db.operation.name': 'select' } });
    expect(children.find((s) => s.attributes['db.system.name'] === 'redis')?.name).toBe('SET');
    const call = children.find((s) => s.attributes['url.full'] !== undefined)!;
    expect(call.attributes).toMatchObject({ 'http.request.method': 'GET', 'url.full': `${upstreamUrl}/downstream`, 'http.response.status_code': 200 });
    // The downstream service was told to continue this trace, under the client span.
    expect(seenTraceparents.at(-1)).toBe(`00-${traceId}-${call.spanContext().spanId}-01`);
    // Every span is one trace, and the log line written inside it says which.
    expect(new Set(spans.filter((s) => s.name !== 'GET /work' || s === server).map((s) => s.spanContext().traceId))).toEqual(new Set([traceId]));
    expect(logs.lines.find((l) => l.msg === 'did the work')).toMatchObject({ traceId, spanId: server.spanContext().spanId });
  });

  it('starts a new trace without a caller, and leaves health, readiness and metrics untraced', async () => {
    const { app } = await build();
    await app.inject({ method: 'GET', url: '/ready' });
    await app.inject({ method: 'GET', url: '/metrics' });
    await app.inject({ method: 'GET', url: '/work' });
    await expect.poll(() => exporter.getFinishedSpans().some((s) => s.name === 'GET /work')).toBe(true);
    const spans = exporter.getFinishedSpans();
    expect(spans.some((s) => /ready|metrics/.test(s.name))).toBe(false);
    expect(spans.find((s) => s.name === 'GET /work')!.parentSpanContext).toBeUndefined();
  });

  it('records query time by operation whether or not a trace is running', async () => {
    const { app } = await build();
    await app.pg.query('select 2');
    const metrics = await app.metrics.metrics();
    expect(metrics).toMatch(/^vivier_db_query_duration_seconds_count\{[^}]*operation="select"[^}]*outcome="ok"[^}]*\} [1-9]/m);
    // Background work outside any trace makes no spans.
    expect(exporter.getFinishedSpans().some((s) => s.attributes['db.query.text'] === 'select 2')).toBe(false);
  });
});

describe('statementOperation', () => {
  it('names the statement after its CTEs', () => {
    expect(statementOperation('  SELECT 1')).toBe('select');
    expect(statementOperation('with a as (select 1), b as (insert into t values (1) returning 1) update x set y = 1')).toBe('update');
    expect(statementOperation('explain select 1')).toBe('other');
  });
});
