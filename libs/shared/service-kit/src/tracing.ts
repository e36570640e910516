import diagnostics from 'node:diagnostics_channel';
import {
  context,
  createContextKey,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ConsoleSpanExporter,
  ParentBasedSampler,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  TracerProvider,
  type Sampler,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace';

/**
 * OpenTelemetry tracing for every service, configured by the standard `OTEL_*` variables.
 *
 * Off unless asked for: `OTEL_TRACES_EXPORTER` (`otlp`, `console`, comma-separated; `none` turns
 * it off) or an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
 * OTLP over HTTP with JSON). `OTEL_SDK_DISABLED=true` wins. Sampling: `OTEL_TRACES_SAMPLER` and
 * `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`); batching: `OTEL_BSP_*`; resource:
 * `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`.
 *
 * The spans are made here, at the boundaries the platform owns, rather than by patching modules
 * at load time (which ESM and bundles defeat): the Fastify server (one span per request, the
 * caller's `traceparent` continued), outgoing HTTP through undici's diagnostics channels (the
 * proxy, providers, service calls; `traceparent` injected), PostgreSQL queries (instrumentPool)
 * and Redis commands (instrumentRedis) inside a trace, and Kafka records in the messaging
 * library (the relay's send, the consumer's processing, context carried in record headers).
 * When tracing is off, each of these costs one boolean check.
 */

let provider: TracerProvider | undefined;
let contextManager: AsyncLocalStorageContextManager | undefined;

/** Whether spans are being recorded in this process. */
export function tracingEnabled(): boolean {
  return provider !== undefined;
}

/** The tracer of one service: its spans carry the instrumentation scope `@vivier/<service>`. */
export function serviceTracer(service: string): Tracer {
  return trace.getTracer(`@vivier/${service}`);
}

/** The tracer of the service handling the current request or record (set by its server/consumer span). */
export const TRACER_KEY = createContextKey('vivier.tracer');

function currentTracer(ctx: Context): Tracer {
  return (ctx.getValue(TRACER_KEY) as Tracer | undefined) ?? trace.getTracer('@vivier/service-kit');
}

export interface TracingOptions {
  env?: NodeJS.ProcessEnv;
  /** Tests: spans go here, each as it ends (no batching). */
  exporter?: SpanExporter;
}

function exportersFromEnv(env: NodeJS.ProcessEnv): SpanExporter[] {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return [];
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT;
  const names = (env.OTEL_TRACES_EXPORTER ?? (endpoint ? 'otlp' : 'none'))
    .split(',')
    .map((n) => n.trim().toLowerCase())
    .filter((n) => n !== '');
  if (names.includes('none')) return [];
  return names.map((name) => {
    if (name === 'otlp') return new OTLPTraceExporter();
    if (name === 'console') return new ConsoleSpanExporter();
    throw new Error(`OTEL_TRACES_EXPORTER: unknown exporter "${name}" (use otlp, console or none)`);
  });
}

/** `OTEL_TRACES_SAMPLER` as the specification names them. */
export function samplerFromEnv(env: NodeJS.ProcessEnv): Sampler {
  const name = (env.OTEL_TRACES_SAMPLER ?? 'parentbased_always_on').trim().toLowerCase();
  const arg = Number(env.OTEL_TRACES_SAMPLER_ARG ?? 1);
  const ratio = Number.isFinite(arg) && arg >= 0 && arg <= 1 ? arg : 1;
  switch (name) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(ratio);
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
    case 'parentbased_always_on':
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    default:
      throw new Error(`OTEL_TRACES_SAMPLER: unknown sampler "${name}"`);
  }
}

function positive(value: string | undefined): number | undefined {
  const n = Number(value);
  return value !== undefined && Number.isInteger(n) && n > 0 ? n : undefined;
}

/**
 * Starts tracing for this process when the environment asks for it (or a test passes an
 * exporter). Returns whether it is on. Call once, before the app is built.
 */
export function startTracing(service: string, options: TracingOptions = {}): boolean {
  if (provider) return true;
  const env = options.env ?? process.env;
  const exporters = options.exporter ? [options.exporter] : exportersFromEnv(env);
  if (exporters.length === 0) return false;
  const batch = {
    ...(positive(env.OTEL_BSP_SCHEDULE_DELAY) ? { scheduledDelayMillis: positive(env.OTEL_BSP_SCHEDULE_DELAY)! } : {}),
    ...(positive(env.OTEL_BSP_MAX_QUEUE_SIZE) ? { maxQueueSize: positive(env.OTEL_BSP_MAX_QUEUE_SIZE)! } : {}),
    ...(positive(env.OTEL_BSP_MAX_EXPORT_BATCH_SIZE) ? { maxExportBatchSize: positive(env.OTEL_BSP_MAX_EXPORT_BATCH_SIZE)! } : {}),
    ...(positive(env.OTEL_BSP_EXPORT_TIMEOUT) ? { exportTimeoutMillis: positive(env.OTEL_BSP_EXPORT_TIMEOUT)! } : {}),
  };
  const spanProcessors: SpanProcessor[] = exporters.map((exporter) =>
    options.exporter ? new SimpleSpanProcessor({ exporter }) : new BatchSpanProcessor({ exporter, ...batch }),
  );
  const resource = defaultResource()
    .merge(resourceFromAttributes({ 'service.name': `vivier-${service}`, 'service.namespace': 'vivier' }))
    .merge(detectResources({ detectors: [envDetector] }));
  provider = new TracerProvider({ resource, sampler: samplerFromEnv(env), spanProcessors });
  contextManager = new AsyncLocalStorageContextManager().enable();
  context.setGlobalContextManager(contextManager);
  propagation.setGlobalPropagator(new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }));
  trace.setGlobalTracerProvider(provider);
  subscribeUndici();
  return true;
}

/** Flushes what is buffered and turns tracing off (process exit, or the end of a test). */
export async function stopTracing(): Promise<void> {
  const current = provider;
  if (!current) return;
  provider = undefined;
  unsubscribeUndici();
  await current.shutdown().catch(() => undefined);
  trace.disable();
  propagation.disable();
  context.disable();
  contextManager = undefined;
}

/** Trace and span ids of the active span, for log lines. */
export function activeTraceIds(): { traceId: string; spanId: string } | undefined {
  if (!provider) return undefined;
  const span = trace.getSpan(context.active());
  if (!span) return undefined;
  const { traceId, spanId } = span.spanContext();
  return { traceId, spanId };
}

/** Ends a span with an error status for `error` (when given). */
export function endSpan(span: Span, error?: unknown): void {
  if (error !== undefined) {
    span.recordException(error instanceof Error ? error : String(error));
    span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
  }
  span.end();
}

/** The W3C headers (`traceparent`, `tracestate`) of a context, for a carrier the platform writes itself. */
export function traceHeaders(ctx: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  if (provider) propagation.inject(ctx, carrier);
  return carrier;
}

/** The context a carrier (HTTP or Kafka headers) continues. */
export function contextFromHeaders(carrier: Record<string, string | undefined>): Context {
  return provider ? propagation.extract(ROOT_CONTEXT, carrier) : ROOT_CONTEXT;
}

// --- HTTP server -----------------------------------------------------------------------------

const UNTRACED_ROUTES = new Set(['/health', '/ready', '/metrics', '/openapi.json']);

interface FastifyLike {
  addHook(name: 'onRequest', hook: (request: RequestLike, reply: ReplyLike, done: (error?: Error) => void) => void): unknown;
}
interface RequestLike {
  id: string;
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  routeOptions: { url?: string };
}
interface ReplyLike {
  raw: { statusCode: number; once(event: 'close', listener: () => void): unknown };
}

/**
 * One SERVER span per request, continuing the caller's `traceparent`; the rest of the request
 * (hooks, handler, everything they start) runs in its context, and the span ends when the
 * response closes (finished, or cut by the client), streamed replies included.
 */
export function traceHttpServer(app: FastifyLike, service: string): void {
  const tracer = serviceTracer(service);
  app.addHook('onRequest', (request, reply, done) => {
    const route = request.routeOptions.url;
    if (!provider || (route !== undefined && UNTRACED_ROUTES.has(route))) return done();
    const parent = propagation.extract(ROOT_CONTEXT, request.headers);
    const path = request.url.split('?', 1)[0]!;
    const span = tracer.startSpan(
      route ? `${request.method} ${route}` : request.method,
      {
        kind: SpanKind.SERVER,
        attributes: { 'http.request.method': request.method, 'url.path': path, ...(route ? { 'http.route': route } : {}), 'vivier.request_id': request.id },
      },
      parent,
    );
    reply.raw.once('close', () => {
      const status = reply.raw.statusCode;
      span.setAttribute('http.response.status_code', status);
      if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    });
    context.with(trace.setSpan(parent, span).setValue(TRACER_KEY, tracer), done);
  });
}

// --- HTTP client (undici: the proxy, providers, service-to-service calls) --------------------

interface UndiciRequest {
  origin: string | URL;
  method: string;
  path: string;
  headers: Array<string | string[]> | string;
  addHeader(name: string, value: string): unknown;
}

const clientSpans = new WeakMap<object, Span>();
const onCreate = (message: unknown) => {
  if (!provider) return;
  const { request } = message as { request: UndiciRequest };
  const ctx = context.active();
  if (!trace.getSpan(ctx)) return; // only inside a trace: no root spans for background calls
  const origin = typeof request.origin === 'string' ? new URL(request.origin) : request.origin;
  const span = currentTracer(ctx).startSpan(
    request.method,
    {
      kind: SpanKind.CLIENT,
      attributes: {
        'http.request.method': request.method,
        'server.address': origin.hostname,
        'server.port': Number(origin.port || (origin.protocol === 'https:' ? 443 : 80)),
        'url.full': `${origin.origin}${request.path.split('?', 1)[0]}`,
      },
    },
    ctx,
  );
  clientSpans.set(request, span);
  const carrier: Record<string, string> = {};
  propagation.inject(trace.setSpan(ctx, span), carrier);
  for (const [name, value] of Object.entries(carrier)) {
    // A proxied request may carry the caller's header already: replace it, never send two.
    const headers = request.headers;
    let replaced = false;
    if (Array.isArray(headers)) {
      for (let i = 0; i + 1 < headers.length; i += 2) {
        if (String(headers[i]).toLowerCase() === name) {
          headers[i + 1] = value;
          replaced = true;
        }
      }
    }
    if (!replaced) request.addHeader(name, value);
  }
};
const onHeaders = (message: unknown) => {
  const { request, response } = message as { request: object; response: { statusCode: number } };
  const span = clientSpans.get(request);
  if (!span) return;
  span.setAttribute('http.response.status_code', response.statusCode);
  if (response.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
};
const onTrailers = (message: unknown) => {
  const { request } = message as { request: object };
  const span = clientSpans.get(request);
  if (!span) return;
  clientSpans.delete(request);
  span.end();
};
const onError = (message: unknown) => {
  const { request, error } = message as { request: object; error: unknown };
  const span = clientSpans.get(request);
  if (!span) return;
  clientSpans.delete(request);
  endSpan(span, error);
};
let undiciSubscribed = false;

function subscribeUndici(): void {
  if (undiciSubscribed) return;
  undiciSubscribed = true;
  diagnostics.subscribe('undici:request:create', onCreate);
  diagnostics.subscribe('undici:request:headers', onHeaders);
  diagnostics.subscribe('undici:request:trailers', onTrailers);
  diagnostics.subscribe('undici:request:error', onError);
}

function unsubscribeUndici(): void {
  if (!undiciSubscribed) return;
  undiciSubscribed = false;
  diagnostics.unsubscribe('undici:request:create', onCreate);
  diagnostics.unsubscribe('undici:request:headers', onHeaders);
  diagnostics.unsubscribe('undici:request:trailers', onTrailers);
  diagnostics.unsubscribe('undici:request:error', onError);
}

// --- Spans of the platform's own work ----------------------------------------------------------

/**
 * Starts a span of the current service under the active span (none outside a trace unless
 * `root`). Returns undefined when tracing is off or there is no trace to join.
 */
export function startChildSpan(name: string, options: { kind?: SpanKind; attributes?: Attributes; root?: boolean; parent?: Context } = {}): { span: Span; context: Context } | undefined {
  if (!provider) return undefined;
  const parent = options.parent ?? context.active();
  if (!options.root && !trace.getSpan(parent)) return undefined;
  const tracer = currentTracer(parent);
  const span = tracer.startSpan(name, { kind: options.kind ?? SpanKind.INTERNAL, ...(options.attributes ? { attributes: options.attributes } : {}) }, parent);
  return { span, context: trace.setSpan(parent, span) };
}

export { SpanKind, SpanStatusCode, context as otelContext, trace as otelTrace };
export type { Context as TraceContext, Span as TraceSpan, Tracer as TraceTracer };
