import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { anthropicMessages, anthropicModelList } from './anthropic.js';
import { FaultStore, faultsFromHeaders, parseFaults, type ResolvedFaults } from './faults.js';
import { geminiGenerate, geminiModelList, geminiStream } from './gemini.js';
import { ollamaChat, ollamaTags } from './ollama.js';
import { openaiChat, openaiError, openaiModel, openaiModelList, openaiResponses } from './openai.js';
import {
  isErrorResponse,
  newId,
  type ErrorResponse,
  type ProtocolHandler,
  type ReplyContext,
  type RouteInput,
} from './protocol.js';
import { buildReply } from './text.js';
import type {
  AbortRecord,
  Faults,
  ProviderSim,
  ProviderSimOptions,
  RequestRecord,
  SimStats,
} from './types.js';

/** Model names the list endpoints report. Any other name is accepted by the chat routes too. */
export const DEFAULT_MODELS: readonly string[] = [
  'gpt-4o-mini',
  'gpt-4o',
  'claude-sonnet-4-5',
  'claude-3-5-haiku-latest',
  'gemini-2.0-flash',
  'gemini-2.5-flash',
  'llama3.2',
  'sim-model-a',
  'sim-model-b',
];

const MAX_BODY = 32 * 1024 * 1024;
const MAX_ABORTS = 100;

/** Per-request mutable state shared by the engine and the close handler. */
interface Exchange {
  rec: RequestRecord;
  phase: AbortRecord['phase'];
  timer?: NodeJS.Timeout;
  /** Set once the exchange is over (ended, cut by us, or the client left). */
  settled: boolean;
  /** The simulator destroyed the socket on purpose (cut), which is not a client abort. */
  cutByUs: boolean;
}

interface Counters {
  since: number;
  requests: number;
  byRoute: Record<string, number>;
  byModel: Record<string, number>;
  byStatus: Record<string, number>;
  completed: number;
  aborted: number;
  stalled: number;
  cut: number;
  injected: { status429: number; status5xx: number; streamError: number };
  imagesReceived: number;
}

function freshCounters(): Counters {
  return {
    since: Date.now(),
    requests: 0,
    byRoute: {},
    byModel: {},
    byStatus: {},
    completed: 0,
    aborted: 0,
    stalled: 0,
    cut: 0,
    injected: { status429: 0, status5xx: 0, streamError: 0 },
    imagesReceived: 0,
  };
}

function bump(map: Record<string, number>, key: string): void {
  map[key] = (map[key] ?? 0) + 1;
}

const GEMINI_PATH = /^\/(v1beta|v1)\/models\/([^/:]+(?:\/[^/:]+)*):(generateContent|streamGenerateContent)$/;

export async function startProviderSim(options: ProviderSimOptions = {}): Promise<ProviderSim> {
  const host = options.host ?? '127.0.0.1';
  const requireAuth = options.requireAuth ?? true;
  const logSize = Math.max(1, options.logSize ?? 200);
  const models = options.models ?? DEFAULT_MODELS;
  const faults = new FaultStore();
  if (options.faults) faults.set(parseFaults(options.faults));

  let counters = freshCounters();
  let log: RequestRecord[] = [];
  let aborts: AbortRecord[] = [];
  let nextId = 1;
  let closing = false;
  const active = new Set<Exchange>();

  function remember(rec: RequestRecord): void {
    log.push(rec);
    // Trimming in batches keeps the ring O(1) amortised instead of shifting on every request.
    if (log.length > logSize * 2) log = log.slice(-logSize);
  }

  function stats(): SimStats {
    return {
      ...counters,
      byRoute: { ...counters.byRoute },
      byModel: { ...counters.byModel },
      byStatus: { ...counters.byStatus },
      injected: { ...counters.injected },
      inFlight: active.size,
      aborts: aborts.slice(),
    };
  }

  function send(
    res: ServerResponse,
    ex: Exchange | undefined,
    e: ErrorResponse,
    contentType = 'application/json',
  ): void {
    if (ex) {
      ex.rec.status = e.status;
      ex.rec.outcome = 'error';
      bump(counters.byStatus, String(e.status));
    }
    res.writeHead(e.status, { 'content-type': contentType, ...e.headers });
    res.end(e.body);
  }

  function sendJson(
    res: ServerResponse,
    status: number,
    body: string,
    headers: Record<string, string> = {},
  ): void {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(body);
  }

  function settle(ex: Exchange, outcome: RequestRecord['outcome']): void {
    if (ex.settled) return;
    ex.settled = true;
    if (ex.timer) clearTimeout(ex.timer);
    ex.rec.outcome = outcome;
    ex.rec.endedAt = Date.now();
    active.delete(ex);
  }

  /** Resolves after ms, or never if the client leaves first (the close handler clears the timer). */
  function wait(ex: Exchange, ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      ex.timer = setTimeout(() => {
        ex.timer = undefined;
        resolve();
      }, ms);
    });
  }

  function readBody(req: IncomingMessage): Promise<Buffer | 'too-large'> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let over = false;
      req.on('data', (c: Buffer) => {
        if (over) return;
        size += c.length;
        if (size > MAX_BODY) {
          over = true;
          chunks.length = 0;
          return;
        }
        chunks.push(c);
      });
      req.on('end', () =>
        resolve(over ? 'too-large' : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)),
      );
      req.on('error', reject);
    });
  }

  async function handleChat(
    handler: ProtocolHandler,
    req: IncomingMessage,
    res: ServerResponse,
    input: RouteInput,
    path: string,
  ): Promise<void> {
    const rec: RequestRecord = {
      id: nextId++,
      startedAt: Date.now(),
      method: req.method ?? 'POST',
      path,
      route: handler.route,
      protocol: handler.protocol,
      stream: false,
      headers: req.headers,
      body: undefined,
      images: [],
      outcome: 'pending',
      chunksSent: 0,
    };
    const startNs = process.hrtime.bigint();
    const ex: Exchange = { rec, phase: 'latency', settled: false, cutByUs: false };
    active.add(ex);
    remember(rec);
    counters.requests++;
    bump(counters.byRoute, handler.route);

    res.on('close', () => {
      if (ex.settled) return;
      if (ex.cutByUs || closing) {
        settle(ex, ex.cutByUs ? 'cut' : 'aborted');
        return;
      }
      if (res.writableFinished) return;
      // The client went away before the response ended: the event the gateway must cause when
      // its own client disconnects, so record when it happened.
      const at = Date.now();
      rec.abortedAt = at;
      counters.aborted++;
      aborts.push({
        requestId: rec.id,
        route: rec.route,
        model: rec.model,
        startedAt: rec.startedAt,
        abortedAt: at,
        phase: ex.phase,
        chunksSent: rec.chunksSent,
      });
      if (aborts.length > MAX_ABORTS) aborts = aborts.slice(-MAX_ABORTS);
      settle(ex, 'aborted');
    });

    let raw: Buffer | 'too-large';
    try {
      raw = await readBody(req);
    } catch {
      settle(ex, 'aborted');
      return;
    }
    if (ex.settled) return;
    if (raw === 'too-large') {
      send(res, ex, handler.error('too-large', 413));
      settle(ex, 'error');
      return;
    }
    let body: unknown;
    try {
      body = raw.length === 0 ? {} : JSON.parse(raw.toString('utf8'));
    } catch {
      send(
        res,
        ex,
        handler.error(
          'bad-request',
          400,
          'Invalid JSON payload received: the request body could not be parsed.',
        ),
      );
      settle(ex, 'error');
      return;
    }
    rec.body = body;

    const authErr = handler.auth(input, requireAuth);
    if (authErr) {
      send(res, ex, authErr);
      settle(ex, 'error');
      return;
    }
    const parsed = handler.parse(body, input);
    if (isErrorResponse(parsed)) {
      send(res, ex, parsed);
      settle(ex, 'error');
      return;
    }
    rec.model = parsed.model;
    rec.stream = parsed.stream;
    rec.images = parsed.images;
    counters.imagesReceived += parsed.images.length;
    bump(counters.byModel, parsed.model);

    let resolved: ResolvedFaults;
    try {
      const hdr = faultsFromHeaders(req.headers);
      const keyHeader = req.headers['x-sim-fault-key'];
      const key =
        typeof keyHeader === 'string' ? keyHeader : hdr ? `${parsed.model}|${JSON.stringify(hdr)}` : '';
      resolved = faults.resolve(parsed.model, hdr, key);
    } catch (e) {
      send(res, ex, handler.error('bad-request', 400, `provider-sim: ${(e as Error).message}`));
      settle(ex, 'error');
      return;
    }

    await wait(ex, resolved.latencyMs);
    if (ex.settled) return;

    if (resolved.failure === '429') {
      counters.injected.status429++;
      rec.fault = '429';
      send(res, ex, handler.error('rate-limit', 429, undefined, resolved.retryAfter));
      settle(ex, 'error');
      return;
    }
    if (resolved.failure === '5xx') {
      counters.injected.status5xx++;
      rec.fault = '5xx';
      send(res, ex, handler.error('server', resolved.status5xx));
      settle(ex, 'error');
      return;
    }

    const cap =
      parsed.maxTokens !== undefined && resolved.maxTokens !== undefined
        ? Math.min(parsed.maxTokens, resolved.maxTokens)
        : (parsed.maxTokens ?? resolved.maxTokens);
    const ctx: ReplyContext = {
      id: newId(handler.idPrefix),
      created: Math.floor(Date.now() / 1000),
      req: parsed,
      reply: buildReply(parsed.model, parsed.prompt, cap, resolved.replyTokens),
      startNs,
    };

    if (parsed.stream) streamReply(handler, res, ex, ctx, input, resolved);
    else await jsonReply(handler, res, ex, ctx, resolved);
  }

  async function jsonReply(
    handler: ProtocolHandler,
    res: ServerResponse,
    ex: Exchange,
    ctx: ReplyContext,
    f: ResolvedFaults,
  ): Promise<void> {
    const rec = ex.rec;
    ex.phase = 'generating';
    if (f.tokensPerSecond > 0) {
      // A non-streaming call still takes as long as generating the tokens would.
      await wait(ex, (ctx.reply.completionTokens / f.tokensPerSecond) * 1000);
      if (ex.settled) return;
    }
    switch (f.failure) {
      case 'stall':
        // Nothing is ever sent: the client sees a request that never answers.
        rec.fault = 'stall';
        ex.phase = 'stalled';
        counters.stalled++;
        return;
      case 'cut':
        rec.fault = 'cut';
        counters.cut++;
        ex.cutByUs = true;
        res.socket?.destroy();
        return;
      case 'stream-error':
        counters.injected.streamError++;
        rec.fault = 'stream-error';
        send(res, ex, handler.error('server', 500));
        settle(ex, 'error');
        return;
      default:
        break;
    }
    rec.status = 200;
    bump(counters.byStatus, '200');
    res.writeHead(200, { 'content-type': 'application/json', ...handler.successHeaders(ctx) });
    res.end(handler.json(ctx));
    counters.completed++;
    settle(ex, 'ok');
  }

  function streamReply(
    handler: ProtocolHandler,
    res: ServerResponse,
    ex: Exchange,
    ctx: ReplyContext,
    input: RouteInput,
    f: ResolvedFaults,
  ): void {
    const rec = ex.rec;
    const r = handler.stream(ctx, input);
    const pieces = ctx.reply.pieces;
    const failing = f.failure === 'stall' || f.failure === 'cut' || f.failure === 'stream-error';
    const limit = failing ? Math.min(f.afterChunks, pieces.length) : pieces.length;

    rec.status = 200;
    bump(counters.byStatus, '200');
    res.writeHead(200, {
      'content-type': r.contentType,
      'cache-control': 'no-cache',
      ...handler.successHeaders(ctx),
    });
    ex.phase = 'streaming';

    const finish = (pending: string): void => {
      switch (f.failure) {
        case 'stall':
          rec.fault = 'stall';
          counters.stalled++;
          ex.phase = 'stalled';
          if (pending) res.write(pending);
          else res.flushHeaders();
          return;
        case 'cut':
          rec.fault = 'cut';
          counters.cut++;
          ex.cutByUs = true;
          if (pending) res.write(pending);
          else res.flushHeaders();
          cutSocket(res);
          return;
        case 'stream-error':
          rec.fault = 'stream-error';
          counters.injected.streamError++;
          res.end(pending + r.streamError(limit));
          settle(ex, 'stream-error');
          return;
        default:
          res.end(pending + r.epilogue(pieces.length));
          counters.completed++;
          settle(ex, 'ok');
      }
    };

    if (f.tokensPerSecond <= 0) {
      // As fast as possible: one write for the whole body, no timers, no per-chunk syscalls.
      let out = r.preamble();
      for (let i = 0; i < limit; i++) out += r.token(pieces[i]!, i);
      rec.chunksSent = limit;
      finish(out);
      return;
    }

    const interval = 1000 / f.tokensPerSecond;
    const start = performance.now();
    let i = 0;
    const first = r.preamble() + (limit > 0 ? r.token(pieces[0]!, 0) : '');
    if (limit > 0) i = 1;
    rec.chunksSent = i;
    if (i >= limit) {
      finish(first);
      return;
    }
    res.write(first);
    const tick = (): void => {
      ex.timer = undefined;
      if (ex.settled) return;
      const chunk = r.token(pieces[i]!, i);
      i++;
      rec.chunksSent = i;
      if (i >= limit) {
        finish(chunk);
        return;
      }
      res.write(chunk);
      // Scheduled against the start time so that timer lateness does not accumulate.
      ex.timer = setTimeout(tick, Math.max(0, start + i * interval - performance.now()));
    };
    ex.timer = setTimeout(tick, interval);
  }

  /**
   * End the connection without the response's terminating chunk. end() (not destroy()) lets the
   * chunks already written reach the client first, so it sees N chunks and then a premature EOF;
   * the delayed destroy covers a client that never closes its side.
   */
  function cutSocket(res: ServerResponse): void {
    const sock = res.socket;
    if (!sock) return;
    sock.end();
    setTimeout(() => sock.destroy(), 1000).unref();
  }

  // ---------------------------------------------------------------------------------------------
  // Control API

  async function handleControl(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    query: string,
  ): Promise<void> {
    const params = new URLSearchParams(query);
    const method = req.method ?? 'GET';
    if (path === '/_sim/health') return sendJson(res, 200, '{"ok":true}');
    if (path === '/_sim/stats' && method === 'GET') return sendJson(res, 200, JSON.stringify(stats()));
    if (path === '/_sim/faults') {
      if (method === 'GET') return sendJson(res, 200, JSON.stringify(faults.snapshot()));
      if (method === 'DELETE') {
        const model = params.get('model');
        faults.clear(model ?? undefined);
        return sendJson(res, 200, JSON.stringify(faults.snapshot()));
      }
      if (method === 'POST' || method === 'PUT') {
        const raw = await readBody(req);
        if (raw === 'too-large') return sendJson(res, 413, '{"error":"body too large"}');
        try {
          const body = JSON.parse(raw.toString('utf8') || '{}') as Record<string, unknown>;
          const nested = typeof body.faults === 'object' && body.faults !== null;
          const f = parseFaults(nested ? body.faults : body);
          const model = typeof body.model === 'string' ? body.model : (params.get('model') ?? undefined);
          faults.set(f, model);
          return sendJson(res, 200, JSON.stringify(faults.snapshot()));
        } catch (e) {
          return sendJson(res, 400, JSON.stringify({ error: (e as Error).message }));
        }
      }
    }
    if (path === '/_sim/requests') {
      if (method === 'DELETE') {
        log = [];
        return sendJson(res, 200, '{"requests":[]}');
      }
      let list = log.slice(-logSize);
      const model = params.get('model');
      const route = params.get('route');
      if (model) list = list.filter((r) => r.model === model);
      if (route) list = list.filter((r) => r.route === route);
      const limit = Number(params.get('limit') ?? '');
      if (Number.isInteger(limit) && limit > 0) list = list.slice(-limit);
      return sendJson(res, 200, JSON.stringify({ requests: list }));
    }
    if (path === '/_sim/reset' && method === 'POST') {
      faults.clear();
      resetStats();
      return sendJson(res, 200, '{"ok":true}');
    }
    return sendJson(res, 404, JSON.stringify({ error: `provider-sim: no control route ${method} ${path}` }));
  }

  function resetStats(): void {
    counters = freshCounters();
    aborts = [];
    log = [];
  }

  // ---------------------------------------------------------------------------------------------
  // Routing

  function notFound(res: ServerResponse, method: string, path: string): void {
    const e = openaiError('bad-request', 404, `provider-sim: no route for ${method} ${path}`);
    send(res, undefined, e);
  }

  function listModels(
    res: ServerResponse,
    route: string,
    body: string,
    headers: Record<string, string> = {},
  ): void {
    counters.requests++;
    bump(counters.byRoute, route);
    bump(counters.byStatus, '200');
    sendJson(res, 200, body, headers);
  }

  function onRequest(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    let path = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? '' : url.slice(q + 1);
    const method = req.method ?? 'GET';
    // Groq-style base URLs put the OpenAI API under /openai/v1.
    if (path.startsWith('/openai/v1/')) path = path.slice(7);
    const input: RouteInput = { headers: req.headers, query };
    const fail = (e: unknown): void => {
      if (!res.headersSent)
        sendJson(res, 500, JSON.stringify({ error: `provider-sim: ${(e as Error).message}` }));
      else res.destroy();
    };

    if (method === 'POST') {
      if (path === '/v1/chat/completions')
        return void handleChat(openaiChat, req, res, input, path).catch(fail);
      if (path === '/v1/messages')
        return void handleChat(anthropicMessages, req, res, input, path).catch(fail);
      if (path === '/api/chat') return void handleChat(ollamaChat, req, res, input, path).catch(fail);
      if (path === '/v1/responses')
        return void handleChat(openaiResponses, req, res, input, path).catch(fail);
      const g = GEMINI_PATH.exec(path);
      if (g) {
        const streaming = g[3] === 'streamGenerateContent';
        const sse = streaming && /(?:^|&)alt=sse(?:&|$)/.test(query);
        const gi: RouteInput = {
          ...input,
          pathModel: decodeURIComponent(g[2]!),
          variant: streaming ? (sse ? 'sse' : 'array') : 'generate',
        };
        return void handleChat(streaming ? geminiStream : geminiGenerate, req, res, gi, path).catch(fail);
      }
    }
    if (path.startsWith('/_sim/')) return void handleControl(req, res, path, query).catch(fail);
    if (method === 'GET') {
      const anthropic = typeof req.headers['anthropic-version'] === 'string';
      const google = typeof req.headers['x-goog-api-key'] === 'string' || /(?:^|&)key=/.test(query);
      if (path === '/v1/models' && !google) {
        return anthropic
          ? listModels(res, 'anthropic.models', anthropicModelList(models), { 'request-id': newId('req_') })
          : listModels(res, 'openai.models', openaiModelList(models), { 'x-request-id': newId('req_') });
      }
      if (path.startsWith('/v1/models/')) {
        const id = decodeURIComponent(path.slice('/v1/models/'.length));
        return anthropic
          ? listModels(
              res,
              'anthropic.models',
              JSON.stringify({ type: 'model', id, display_name: id, created_at: '2025-01-01T00:00:00Z' }),
            )
          : listModels(res, 'openai.models', openaiModel(id));
      }
      if (path === '/v1beta/models' || path === '/v1/models')
        return listModels(res, 'gemini.models', geminiModelList(models));
      if (path === '/api/tags') return listModels(res, 'ollama.tags', ollamaTags(models));
      if (path === '/api/version') return sendJson(res, 200, '{"version":"0.6.0"}');
      if (path === '/') {
        // Ollama clients probe the root for this exact text.
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
        res.end('Ollama is running');
        return;
      }
    }
    notFound(res, method, path);
  }

  const server = createServer({ noDelay: true, requestTimeout: 0 }, onRequest);
  // Longer than any client's idle keep-alive, so the server never closes a connection that a
  // client is about to reuse (a source of spurious ECONNRESET in benchmarks).
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;

  return {
    url: `http://${urlHost}:${port}`,
    port,
    setFaults: (f: Faults, scope?: string) => faults.set(parseFaults(f), scope),
    resetFaults: () => faults.clear(),
    stats,
    resetStats,
    requests: () => log.slice(-logSize),
    close: () =>
      new Promise<void>((resolve) => {
        closing = true;
        for (const ex of active) if (ex.timer) clearTimeout(ex.timer);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
