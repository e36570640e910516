// The HTTP side every network adapter shares: one keep-alive pool per origin, the per-call scope
// (overall timeout, caller's AbortSignal, consumer going away), and the mapping of every failure
// (status codes, socket errors, timeouts) onto ProviderError.
import { Pool } from 'undici';
import type { Dispatcher } from 'undici';
import { createGuardedLookup } from './ssrf.js';
import {
  ProviderError,
  type CallOptions,
  type ChatRequest,
  type ProviderErrorKind,
  type StreamEvent,
} from './types.js';

/** Defaults applied when neither the deployment nor the call sets a limit. */
export const DEFAULT_TIMEOUT_MS = 600_000;
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
const MAX_ERROR_BODY = 64 * 1024;

export interface HttpEndpointOptions {
  provider: string;
  baseUrl: string;
  /** Sent with every request (auth, version, content-type); computed once. */
  headers: Record<string, string>;
  /** Check every address a connection goes to (base URLs an admin typed in). */
  guard?: { allowlist: readonly string[] };
}

interface SharedPool {
  pool: Pool;
  users: number;
}

// Several deployments often point at one origin (two keys, two models): they share sockets.
const pools = new Map<string, SharedPool>();

function acquirePool(origin: string, guard: HttpEndpointOptions['guard']): { key: string; pool: Pool } {
  const key = guard ? `${origin}|guard:${guard.allowlist.join(',')}` : origin;
  let shared = pools.get(key);
  if (!shared) {
    shared = {
      pool: new Pool(origin, {
        keepAliveTimeout: 30_000,
        keepAliveMaxTimeout: 600_000,
        // Per-request values below replace these; a request never waits on the pool defaults.
        headersTimeout: DEFAULT_IDLE_TIMEOUT_MS,
        bodyTimeout: DEFAULT_IDLE_TIMEOUT_MS,
        ...(guard ? { connect: { lookup: createGuardedLookup(guard.allowlist) } } : {}),
      }),
      users: 0,
    };
    pools.set(key, shared);
  }
  shared.users++;
  return { key, pool: shared.pool };
}

async function releasePool(key: string): Promise<void> {
  const shared = pools.get(key);
  if (!shared) return;
  shared.users--;
  if (shared.users > 0) return;
  pools.delete(key);
  await shared.pool.close();
}

/** The names of a model list, checked: strings of a sane length, each once, in the server's order. */
export function modelNames(names: unknown[] | undefined, provider: string): string[] {
  if (!names) throw new Error(`${provider}: the model list is not in the expected shape`);
  const out = new Set<string>();
  for (const name of names) if (typeof name === 'string' && name.length > 0 && name.length <= 256 && !/\s/.test(name)) out.add(name);
  return [...out];
}

export type ResponseBody = Dispatcher.ResponseData['body'];

/** One base URL of one provider, with its headers and its pooled connections. */
export class HttpEndpoint {
  readonly provider: string;
  /** Path prefix of the base URL without a trailing slash (`/v1`, or ''). */
  readonly basePath: string;
  private readonly headers: Record<string, string>;
  private readonly pool: Pool;
  private readonly poolKey: string;
  private closed = false;

  constructor(options: HttpEndpointOptions) {
    const url = new URL(options.baseUrl);
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new Error(`${options.provider}: base URL must be http or https, got ${url.protocol}`);
    this.provider = options.provider;
    this.basePath = url.pathname.replace(/\/+$/, '');
    this.headers = {
      'content-type': 'application/json',
      accept: '*/*',
      'user-agent': 'vivier-providers/0.1',
      ...options.headers,
    };
    const { key, pool } = acquirePool(url.origin, options.guard);
    this.poolKey = key;
    this.pool = pool;
  }

  /**
   * POSTs `body` and resolves with the response body once a 2xx head arrived. Any other status
   * becomes a ProviderError carrying the vendor's message and Retry-After. Redirects are never
   * followed (undici's request does not, and a 3xx is an error here).
   */
  async post(path: string, body: string, scope: CallScope, idleTimeoutMs: number): Promise<ResponseBody> {
    const res = await this.pool.request({
      method: 'POST',
      path,
      headers: this.headers,
      body,
      signal: scope.signal,
      headersTimeout: idleTimeoutMs,
      bodyTimeout: idleTimeoutMs,
    });
    scope.phase = 'body';
    if (res.statusCode >= 200 && res.statusCode < 300) return res.body;
    const text = await readLimited(res.body);
    throw errorFromResponse(this.provider, res.statusCode, res.headers, text);
  }

  /**
   * GETs a JSON document (a model list) within `timeoutMs`. A non-2xx status becomes a
   * ProviderError like a chat call's; a body over `maxBytes` or not JSON is an Error.
   */
  async getJson(path: string, timeoutMs: number, maxBytes = 4 * 1024 * 1024): Promise<unknown> {
    const signal = AbortSignal.timeout(timeoutMs);
    const res = await this.pool.request({ method: 'GET', path, headers: this.headers, signal, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
    if (res.statusCode < 200 || res.statusCode >= 300) {
      const text = await readLimited(res.body);
      throw errorFromResponse(this.provider, res.statusCode, res.headers, text);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body) {
      size += (chunk as Buffer).length;
      if (size > maxBytes) {
        res.body.destroy();
        throw new Error(`${this.provider}: ${path} answered more than ${maxBytes} bytes`);
      }
      chunks.push(chunk as Buffer);
    }
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await releasePool(this.poolKey);
  }
}

async function readLimited(body: ResponseBody): Promise<string> {
  const utf8 = new TextDecoder();
  let text = '';
  for await (const chunk of body) {
    text += utf8.decode(chunk as Uint8Array, { stream: true });
    if (text.length > MAX_ERROR_BODY) {
      body.destroy();
      break;
    }
  }
  return text;
}

function header(headers: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Milliseconds to wait, from `retry-after-ms`, `retry-after` (seconds or a date) or Google's RetryInfo. */
export function retryAfterMs(headers: Dispatcher.ResponseData['headers'], body: string): number | undefined {
  const ms = header(headers, 'retry-after-ms');
  if (ms !== undefined && ms.trim() !== '' && Number.isFinite(Number(ms)))
    return Math.max(0, Math.ceil(Number(ms)));
  const ra = header(headers, 'retry-after');
  if (ra !== undefined && ra.trim() !== '') {
    const seconds = Number(ra);
    if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds * 1000));
    const date = Date.parse(ra);
    if (Number.isFinite(date)) return Math.max(0, date - Date.now());
  }
  const delay = /"retryDelay"\s*:\s*"(\d+(?:\.\d+)?)s"/.exec(body);
  if (delay?.[1] !== undefined) return Math.ceil(Number(delay[1]) * 1000);
  return undefined;
}

/** The human message inside any vendor's error body (OpenAI, Anthropic, Gemini, Ollama shapes). */
export function vendorMessage(body: string): string | undefined {
  if (body.length === 0) return undefined;
  try {
    const parsed = JSON.parse(body) as { error?: unknown; message?: unknown };
    const err = parsed.error;
    if (typeof err === 'string') return err;
    if (err !== null && typeof err === 'object') {
      const m = (err as { message?: unknown }).message;
      if (typeof m === 'string') return m;
    }
    if (typeof parsed.message === 'string') return parsed.message;
  } catch {
    // Not JSON (an HTML error page from a proxy): a prefix is enough to recognise it.
  }
  return body.slice(0, 200);
}

export function kindForStatus(status: number, message: string): ProviderErrorKind {
  if (status === 429) return 'rate_limited';
  if (status === 401 || status === 403) return 'auth';
  // Gemini answers a wrong key with 400 INVALID_ARGUMENT.
  if (status === 400 && /api key not valid/i.test(message)) return 'auth';
  if (status === 404) return 'not_found';
  if (status === 408) return 'timeout';
  if (status >= 500 || status === 409) return 'server';
  return 'bad_request';
}

export function errorFromResponse(
  provider: string,
  status: number,
  headers: Dispatcher.ResponseData['headers'],
  body: string,
): ProviderError {
  const vendor = vendorMessage(body) ?? '';
  const message =
    status >= 300 && status < 400
      ? `${provider} answered with a redirect (${status}); provider redirects are not followed`
      : `${provider} returned ${status}${vendor ? `: ${vendor.slice(0, 500)}` : ''}`;
  const retryAfter = retryAfterMs(headers, body);
  const kind = kindForStatus(status, vendor);
  return new ProviderError({
    kind,
    provider,
    status,
    message,
    // What the vendor says of a request it refuses is about the request (a parameter out of range,
    // too long a context): the user who sent it may read it. Everything else stays in the logs.
    ...(kind === 'bad_request' && vendor ? { publicMessage: `${provider} refused the request (HTTP ${status}): ${vendor.slice(0, 500)}` } : {}),
    beforeFirstToken: true,
    ...(retryAfter === undefined ? {} : { retryAfterMs: retryAfter }),
  });
}

function errorCode(err: unknown): string | undefined {
  if (err === null || typeof err !== 'object') return undefined;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') return code;
  return errorCode((err as { cause?: unknown }).cause);
}

/**
 * Everything one upstream call owns: the AbortController handed to undici (so aborting closes the
 * socket), the overall timer, the caller's signal, and whether text has gone out yet.
 */
export class CallScope {
  readonly signal: AbortSignal;
  phase: 'request' | 'body' = 'request';
  /** Set once a non-empty delta has been yielded: from then on the call cannot be replayed. */
  emitted = false;
  /** The body was read to its end: nothing left to abort. */
  completed = false;
  private readonly controller = new AbortController();
  private ended: 'cancelled' | 'timeout' | undefined;
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly userSignal: AbortSignal | undefined;
  private readonly onUserAbort: (() => void) | undefined;

  constructor(
    readonly provider: string,
    userSignal: AbortSignal | undefined,
    private readonly timeoutMs: number,
  ) {
    this.signal = this.controller.signal;
    if (userSignal) {
      if (userSignal.aborted) {
        this.ended = 'cancelled';
        this.controller.abort();
      } else {
        this.userSignal = userSignal;
        this.onUserAbort = () => this.stop('cancelled');
        userSignal.addEventListener('abort', this.onUserAbort, { once: true });
      }
    }
    if (timeoutMs > 0 && timeoutMs !== Infinity) {
      this.timer = setTimeout(() => this.stop('timeout'), timeoutMs);
      this.timer.unref();
    }
  }

  private stop(why: 'cancelled' | 'timeout'): void {
    if (this.ended) return;
    this.ended = why;
    this.controller.abort();
  }

  /** Throws at once when the caller cancelled before anything was sent. */
  throwIfCancelled(): void {
    if (this.ended === 'cancelled') throw this.fail(new Error('aborted'));
  }

  /** Any failure of this call as a ProviderError, with `beforeFirstToken` from what went out. */
  fail(err: unknown): ProviderError {
    const beforeFirstToken = !this.emitted;
    // Our own abort wins over whatever undici reports for it (AbortError, socket destroyed, …).
    if (this.ended === 'cancelled')
      return new ProviderError({
        kind: 'cancelled',
        provider: this.provider,
        message: 'request cancelled',
        beforeFirstToken,
        cause: err,
      });
    if (this.ended === 'timeout')
      return new ProviderError({
        kind: 'timeout',
        provider: this.provider,
        message: `${this.provider} did not finish within ${this.timeoutMs} ms`,
        beforeFirstToken,
        cause: err,
      });
    if (err instanceof ProviderError)
      return err.beforeFirstToken === beforeFirstToken ? err : err.with({ beforeFirstToken });
    const code = errorCode(err);
    const detail = err instanceof Error ? err.message : String(err);
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT')
      return new ProviderError({
        kind: 'timeout',
        provider: this.provider,
        message: `${this.provider} went silent (${code === 'UND_ERR_HEADERS_TIMEOUT' ? 'no response head' : 'no data'} within the idle timeout)`,
        beforeFirstToken,
        cause: err,
      });
    if (code === 'ERR_UNSAFE_PROVIDER_URL')
      return new ProviderError({
        kind: 'connection',
        provider: this.provider,
        message: detail,
        retryable: false,
        beforeFirstToken,
        cause: err,
      });
    if (err instanceof SyntaxError)
      return new ProviderError({
        kind: 'server',
        provider: this.provider,
        message: `${this.provider} sent malformed data: ${err.message}`,
        beforeFirstToken,
        cause: err,
      });
    if (this.phase === 'body')
      return new ProviderError({
        kind: 'stream_cut',
        provider: this.provider,
        message: `${this.provider} stream ended early: ${detail}`,
        beforeFirstToken,
        cause: err,
      });
    return new ProviderError({
      kind: 'connection',
      provider: this.provider,
      message: `cannot reach ${this.provider}: ${detail}`,
      beforeFirstToken,
      cause: err,
    });
  }

  /** Releases the timer and listener; aborts the request if it is still open (the consumer left). */
  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.userSignal && this.onUserAbort) this.userSignal.removeEventListener('abort', this.onUserAbort);
    if (!this.completed && !this.controller.signal.aborted) this.controller.abort();
  }
}

/**
 * Turns body text into events, one protocol each. `push` may throw a ProviderError for an
 * in-stream error event; `finish` runs when the body ended and returns the closing usage/finish
 * events, or throws `stream_cut` when the protocol's end marker never came.
 */
export interface WireDecoder {
  push(text: string, out: StreamEvent[]): void;
  finish(out: StreamEvent[]): Promise<void> | void;
}

/** The loop every HTTP adapter runs: request, decode, yield, and clean up whatever happens. */
export async function* streamOverHttp(
  endpoint: HttpEndpoint,
  path: string,
  payload: string,
  request: ChatRequest,
  options: CallOptions | undefined,
  decoder: WireDecoder,
): AsyncGenerator<StreamEvent> {
  const scope = new CallScope(endpoint.provider, request.signal, options?.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  try {
    scope.throwIfCancelled();
    const body = await endpoint.post(path, payload, scope, options?.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS);
    const events: StreamEvent[] = [];
    // Multi-byte characters may straddle chunks; the streaming decoder carries the partial bytes.
    const utf8 = new TextDecoder();
    // The body is read to its end even after the protocol's end marker so the socket goes back
    // to the pool instead of being destroyed.
    for await (const chunk of body) {
      try {
        decoder.push(utf8.decode(chunk as Uint8Array, { stream: true }), events);
      } catch (err) {
        // Text decoded before an in-stream error in the same read still reaches the caller.
        yield* drain(events, scope);
        throw err;
      }
      if (events.length === 0) continue;
      yield* drain(events, scope);
    }
    scope.completed = true;
    try {
      const rest = utf8.decode();
      if (rest.length > 0) decoder.push(rest, events);
      await decoder.finish(events);
    } catch (err) {
      yield* drain(events, scope);
      throw err;
    }
    yield* drain(events, scope);
  } catch (err) {
    throw scope.fail(err);
  } finally {
    scope.dispose();
  }
}

/**
 * Yields the decoded events, merging adjacent deltas of one network read into one: fewer
 * events for the consumer to forward, same text.
 */
function* drain(events: StreamEvent[], scope: CallScope): Generator<StreamEvent> {
  let pending = '';
  for (const ev of events) {
    if (ev.type === 'delta') {
      pending += ev.text;
      continue;
    }
    if (pending.length > 0) {
      scope.emitted = true;
      yield { type: 'delta', text: pending };
      pending = '';
    }
    yield ev;
  }
  if (pending.length > 0) {
    scope.emitted = true;
    yield { type: 'delta', text: pending };
  }
  events.length = 0;
}
