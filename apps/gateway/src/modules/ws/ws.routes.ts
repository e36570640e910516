import websocket from '@fastify/websocket';
import { Counter, Gauge } from 'prom-client';
import type { FastifyRequest } from 'fastify';
import { request as httpRequest, type Dispatcher } from 'undici';
import type { WebSocket } from 'ws';
import { closeStep, HttpProblem, signContext, type Identity, type ServiceApp } from '@vivier/service-kit';
import { looksLikeApiKey } from '../auth/api-key.service';
import { bearer } from '../auth/auth.plugin';
import { UserChannels, type ReplyEnvelope } from './user-channels';

export interface WsOptions {
  chatUrl: string;
  dispatcher: Dispatcher;
  identitySecret: string;
  /** Origins allowed to open a socket (the CORS allowlist); requests without Origin are not browsers. */
  origins: string[];
  /** `<prefix>user:<userId>`: where chat publishes the user's reply events. */
  userChannel: (userId: string) => string;
  authTimeoutMs: number;
  pingIntervalMs: number;
  maxBufferedBytes: number;
  /** Sockets one user may hold open on this instance at once. */
  maxSocketsPerUser: number;
}

/** Close codes: 4401 not (or no longer) authenticated, 4008 too slow to keep up, 4029 too many sockets of one user. */
export const CLOSE = { unauthenticated: 4401, slowConsumer: 4008, tooManySockets: 4029, goingAway: 1001 } as const;

/** Frames of one socket waiting on chat at once (a resume holds its place until its reply ends). */
const MAX_FRAMES_IN_FLIGHT = 8;
/** Reply ids a socket remembers the chat of, for `chat.cancel` by message id alone. */
const REMEMBERED_REPLIES = 256;

const WS_PATH = '/api/v1/ws';

/** How often a resume waiting for its socket to drain looks again. */
const DRAIN_POLL_MS = 10;

/** How long a slow socket's close frame may wait behind its buffer before the connection is cut. */
const SLOW_CLOSE_GRACE_MS = 5000;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

type ClientFrame =
  | { type: 'auth'; token: string }
  | { type: 'ping' }
  | { type: 'chat.send'; requestId: string; chatId: string; content: string; model?: string }
  | { type: 'chat.cancel'; chatId?: string; messageId: string }
  | { type: 'chat.resume'; chatId: string; messageId: string; after: number };

/** Checks a client frame; a string says what is wrong with it. */
function parseFrame(raw: string): ClientFrame | string {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return 'The frame is not JSON.';
  }
  if (typeof value !== 'object' || value === null || typeof (value as { type?: unknown }).type !== 'string') return 'A frame is an object with a `type`.';
  const f = value as Record<string, unknown>;
  const str = (k: string, max = 200) => typeof f[k] === 'string' && (f[k] as string).length > 0 && (f[k] as string).length <= max;
  switch (f.type) {
    case 'auth':
      return str('token', 4096) ? (f as ClientFrame) : '`auth` needs a `token`.';
    case 'ping':
      return { type: 'ping' };
    case 'chat.send':
      if (!str('requestId', 100) || !str('chatId') || !UUID.test(f.chatId as string) || !str('content', 100_000)) return '`chat.send` needs `requestId`, a `chatId` (uuid) and `content`.';
      if (f.model !== undefined && !str('model', 256)) return '`model` must be a model id.';
      return f as ClientFrame;
    case 'chat.cancel':
      if (f.chatId !== undefined && !(str('chatId') && UUID.test(f.chatId as string))) return '`chatId` must be a uuid.';
      return str('messageId') && UUID.test(f.messageId as string) ? (f as ClientFrame) : '`chat.cancel` needs a `messageId` (uuid).';
    case 'chat.resume':
      return str('chatId') && UUID.test(f.chatId as string) && str('messageId') && UUID.test(f.messageId as string) && Number.isInteger(f.after) && (f.after as number) >= 0
        ? (f as ClientFrame)
        : '`chat.resume` needs `chatId`, `messageId` (uuids) and `after` (the last seq seen).';
    default:
      return `Unknown frame type "${String(f.type)}".`;
  }
}

/** Reads SSE blocks from a chat response body. */
async function* sseEvents(body: AsyncIterable<Buffer | string>): AsyncGenerator<{ id: number; event: string; data: unknown }> {
  let buffer = '';
  // A character's bytes may straddle two reads: the streaming decoder keeps the partial ones.
  const utf8 = new TextDecoder();
  for await (const chunk of body) {
    buffer += typeof chunk === 'string' ? chunk : utf8.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let id = 0;
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('id: ')) id = Number(line.slice(4));
        else if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      if (data.length > 0) yield { id, event, data: JSON.parse(data.join('\n')) as unknown };
    }
  }
}

/**
 * @fastify/websocket, registered at the root before any route: every upgrade request is routed,
 * whatever its path, and the plugin's hooks must see all of them. Registered inside wsRoutes' own
 * scope, an upgrade to any other path (`/api/v1/health`, a 404) was answered and its socket left
 * open: upgraded sockets have none of the server's timeouts, so anyone could hold them by the
 * thousand.
 */
export async function websocketSupport(app: ServiceApp, options: { maxFrameBytes: number }): Promise<void> {
  await app.register(websocket, { options: { maxPayload: options.maxFrameBytes } });
  // Only the socket route upgrades: any other path is refused before any other work (the plugin
  // would upgrade it and then close it), and the plugin destroys the connection once answered.
  app.addHook('onRequest', async (request) => {
    if (request.ws && request.routeOptions.url !== WS_PATH)
      throw new HttpProblem(400, 'upgrade_not_supported', `Only ${WS_PATH} accepts a WebSocket upgrade.`);
  });
}

/**
 * `GET /api/v1/ws`: the user's replies, live, on every socket they have on any gateway instance.
 * Authenticated by an access token or API key in the `Authorization` header or in a first
 * `{type:'auth', token}` frame (browsers cannot set headers); closed at the token's expiry and
 * when auth revokes it. Reply events come from chat through Redis pub/sub (the user's channel),
 * so a message sent from one tab streams in every other. A client that reconnects asks for a
 * reply's events after the last `seq` it saw (`chat.resume`); chat answers from its journal or
 * the database. A socket that cannot keep up is closed rather than buffered without bound.
 */
export async function wsRoutes(app: ServiceApp, options: WsOptions): Promise<void> {
  const channels = new UserChannels(app.redis, options.userChannel, app.log);
  closeStep(app, 'gateway: websocket channels', async () => channels.close());
  const sockets = new Set<WebSocket>();
  /** Open, authenticated sockets per user on this instance. */
  const socketsOf = new Map<string, number>();
  // Read at scrape time from the set of sockets.
  new Gauge({ name: 'vivier_gateway_websockets_open', help: 'WebSockets open on this instance.', registers: [app.metrics], collect() { this.set(sockets.size); } });
  const closed = new Counter({ name: 'vivier_gateway_websocket_closes_total', help: 'WebSockets closed, by close code.', labelNames: ['code'], registers: [app.metrics] });
  closeStep(
    app,
    'gateway: websockets going away',
    async () => {
      for (const socket of sockets) socket.close(CLOSE.goingAway, 'server shutting down');
    },
    'preClose',
  );

  async function authenticate(
    credential: string,
    origin: { ip: string; userAgent: string | undefined },
  ): Promise<{ identity: Identity; iat?: number; exp?: number }> {
    const edge = app.edgeAuth;
    let result: { identity: Identity; iat?: number; exp?: number };
    if (looksLikeApiKey(credential)) {
      const identity = await edge.apiKeys.verify(credential, undefined, origin);
      if (!identity) throw new Error('The API key is invalid or revoked.');
      result = { identity };
    } else {
      const verified = await edge.tokens.verify(credential);
      result = { identity: verified.identity, iat: verified.iat, exp: verified.exp };
    }
    if (await edge.checker.isRevoked(result.identity, result.iat)) throw new Error('The credential has been revoked.');
    return result;
  }

  /** A call to chat as this user (the gateway vouches for the caller with a signed context). */
  function callChat(request: FastifyRequest, identity: Identity, method: 'GET' | 'POST', path: string, extra: { body?: unknown; headers?: Record<string, string>; signal?: AbortSignal } = {}) {
    const context = signContext(
      { ip: request.ip, ...(request.headers['user-agent'] ? { userAgent: request.headers['user-agent'].slice(0, 512) } : {}), identity, exp: Math.floor(Date.now() / 1000) + 300 },
      options.identitySecret,
    );
    return httpRequest(`${options.chatUrl}${path}`, {
      method,
      dispatcher: options.dispatcher,
      headers: { ...context, 'x-request-id': request.id, ...(extra.body === undefined ? {} : { 'content-type': 'application/json' }), ...extra.headers },
      ...(extra.body === undefined ? {} : { body: JSON.stringify(extra.body) }),
      ...(extra.signal ? { signal: extra.signal } : {}),
    });
  }

  /** Refused at the handshake, before any upgrade: a page of another site never gets a socket. */
  const allowedOrigin = async (request: FastifyRequest) => {
    const origin = request.headers.origin;
    if (origin !== undefined && !options.origins.includes(origin))
      throw new HttpProblem(403, 'origin_not_allowed', `The origin ${origin.slice(0, 200)} may not open a socket here.`);
  };

  app.get(WS_PATH, { websocket: true, config: { access: 'public' }, schema: { hide: true }, preValidation: allowedOrigin }, (socket, request) => {
    sockets.add(socket);
    let identity: Identity | undefined;
    let issuedAt: number | undefined;
    const ip = request.ip;
    const cleanups: Array<() => void> = [];
    /** Aborted when the socket goes: what it still waits for from chat (a resume above all) ends. */
    const gone = new AbortController();
    cleanups.push(() => gone.abort());
    /** Frames waiting on chat: sends and resumes, and cancels apart (each at most MAX_FRAMES_IN_FLIGHT). */
    let inFlight = 0;
    let cancelsInFlight = 0;
    /** messageId → chatId of the replies this socket has seen, the oldest forgotten first. */
    const chatOf = new Map<string, string>();
    const remember = (messageId: string, chatId: string) => {
      if (chatOf.has(messageId)) return;
      if (chatOf.size >= REMEMBERED_REPLIES) chatOf.delete(chatOf.keys().next().value!);
      chatOf.set(messageId, chatId);
    };
    // A resume of a reply in progress: chat's stream replays it after `after` and follows it to its
    // end, so the reply's live events are not sent meanwhile (they would come twice, out of order),
    // and the replay skips the ones this socket already got live (the seqs from first to last).
    const resuming = new Map<string, number>();
    const sentLive = new Map<string, { first: number; last: number }>();
    const sentLiveOf = (messageId: string, seq: number) => {
      const range = sentLive.get(messageId);
      if (range && seq <= range.last + 1) {
        range.last = Math.max(range.last, seq);
        return;
      }
      // A gap (events missed while Redis reconnected): only what follows it is known to be sent.
      if (range) sentLive.delete(messageId);
      else if (sentLive.size >= REMEMBERED_REPLIES) sentLive.delete(sentLive.keys().next().value!);
      sentLive.set(messageId, { first: seq, last: seq });
    };
    let alive = true;
    let ended = false;
    /** Counted once, and the socket follows nothing more from the moment it is decided. */
    const end = (code: number) => {
      if (ended) return;
      ended = true;
      closed.inc({ code: String(code) });
      sockets.delete(socket);
      clearInterval(ping);
      clearTimeout(authTimer);
      for (const cleanup of cleanups.splice(0)) cleanup();
    };
    const closeWith = (code: number, reason: string) => {
      end(code);
      socket.close(code, reason);
    };

    const send = (frame: Record<string, unknown>) => {
      if (ended || socket.readyState !== socket.OPEN) return;
      // Backpressure: a socket that cannot drain is dropped, not buffered without bound. Its close
      // frame waits behind what is buffered; a peer that does not read it within the grace is cut.
      if (socket.bufferedAmount > options.maxBufferedBytes) {
        closeWith(CLOSE.slowConsumer, 'too slow to keep up');
        setTimeout(() => socket.terminate(), SLOW_CLOSE_GRACE_MS).unref();
        return;
      }
      socket.send(JSON.stringify(frame));
    };
    /** Resolves once the socket's unsent data is at most `bytes`, or it has ended. */
    const drained = (bytes: number) =>
      new Promise<void>((resolve) => {
        const check = () => (ended || socket.readyState !== socket.OPEN || socket.bufferedAmount <= bytes ? resolve() : setTimeout(check, DRAIN_POLL_MS));
        check();
      });
    const replyFrame = (e: Pick<ReplyEnvelope, 'seq' | 'type' | 'data' | 'messageId' | 'chatId'>) => ({ type: `chat.${e.type}`, chatId: e.chatId, messageId: e.messageId, seq: e.seq, data: e.data });

    const ping = setInterval(() => {
      if (!alive) {
        socket.terminate(); // no pong since the last ping: a dead peer
        return;
      }
      alive = false;
      socket.ping();
    }, options.pingIntervalMs);
    socket.on('pong', () => (alive = true));
    const authTimer = setTimeout(() => {
      if (!identity) closeWith(CLOSE.unauthenticated, 'authenticate within a few seconds');
    }, options.authTimeoutMs);

    let authenticating = false;
    /** Settles once a credential being checked is settled: frames that arrive meanwhile wait for it. */
    let identityKnown: Promise<void> | undefined;
    let framesWaitingForIdentity = 0;
    function start(credential: string): Promise<void> {
      authenticating = true;
      let known!: () => void;
      identityKnown = new Promise<void>((resolve) => (known = resolve));
      const checking = authenticateSocket(credential, known);
      checking.then(known, known);
      return checking;
    }
    /** `known` is called once the credential is settled (before the user's channel is followed). */
    async function authenticateSocket(credential: string, known: () => void): Promise<void> {
      let auth: Awaited<ReturnType<typeof authenticate>>;
      try {
        auth = await authenticate(credential, { ip: request.clientIp, userAgent: request.clientUserAgent });
      } catch (error) {
        closeWith(CLOSE.unauthenticated, (error as Error).message.slice(0, 120));
        return;
      }
      clearTimeout(authTimer);
      identity = auth.identity;
      issuedAt = auth.iat;
      known();
      // Closed when auth revokes the credential, and when an access token expires.
      if (ended) return; // closed while the credential was being checked
      // A bound on what one user can make this instance hold (every reply event is sent to each of
      // their sockets): a user's tabs and devices fit well within it.
      const userId = auth.identity.sub;
      const open = socketsOf.get(userId) ?? 0;
      if (open >= options.maxSocketsPerUser) {
        closeWith(CLOSE.tooManySockets, `at most ${options.maxSocketsPerUser} sockets per user`);
        return;
      }
      socketsOf.set(userId, open + 1);
      cleanups.push(() => {
        const left = (socketsOf.get(userId) ?? 1) - 1;
        if (left > 0) socketsOf.set(userId, left);
        else socketsOf.delete(userId);
      });
      cleanups.push(app.edgeAuth.openRequests.add(auth.identity, auth.iat, () => closeWith(CLOSE.unauthenticated, 'credential revoked')));
      if (auth.exp !== undefined) {
        const expiry = setTimeout(() => closeWith(CLOSE.unauthenticated, 'access token expired'), Math.max(0, auth.exp * 1000 - Date.now()));
        cleanups.push(() => clearTimeout(expiry));
      }
      try {
        const unfollow = await channels.follow(
          auth.identity.sub,
          (envelope) => {
            remember(envelope.messageId, envelope.chatId);
            if (resuming.has(envelope.messageId)) return; // the replay carries it
            sentLiveOf(envelope.messageId, envelope.seq);
            send(replyFrame(envelope));
          },
          () => {
            // What was sent live before the break says nothing of what came after it.
            sentLive.clear();
            send({ type: 'error', code: 'fanout_interrupted', detail: 'Live events may have been missed while this gateway reconnected to Redis; use chat.resume for replies in progress.' });
          },
        );
        if (ended) return unfollow();
        cleanups.push(unfollow);
      } catch (error) {
        // Still following: the events come once Redis is back (UserChannels).
        const { stop } = error as { stop?: () => void };
        if (stop) {
          if (ended) return stop();
          cleanups.push(stop);
        }
        app.log.warn({ err: error }, 'cannot follow the user channel yet');
        send({ type: 'error', code: 'fanout_unavailable', detail: 'Live events are unavailable right now; they start again once this gateway reaches Redis (a fanout_interrupted frame says so); use chat.resume to catch up.' });
      }
      send({ type: 'ready', userId: auth.identity.sub });
    }

    async function handle(frame: ClientFrame): Promise<void> {
      if (frame.type === 'ping') return send({ type: 'pong' });
      if (frame.type === 'auth') {
        if (identity || authenticating) return send({ type: 'error', code: 'already_authenticated' });
        return start(frame.token);
      }
      if (!identity && identityKnown) {
        // Sent before the header credential was settled: it waits for it, a few frames at most.
        if (framesWaitingForIdentity >= MAX_FRAMES_IN_FLIGHT) return send({ type: 'error', code: 'too_many_in_flight', detail: `At most ${MAX_FRAMES_IN_FLIGHT} frames may wait for the credential to be checked.` });
        framesWaitingForIdentity += 1;
        try {
          await identityKnown;
        } finally {
          framesWaitingForIdentity -= 1;
        }
      }
      if (!identity) return send({ type: 'error', code: 'unauthenticated', detail: 'Send {type:"auth", token} first.' });
      const about = frame.type === 'chat.send' ? { requestId: frame.requestId } : { messageId: frame.messageId };
      // A cancel is never refused for want of a slot of the others: resumes can hold them all,
      // and a reply that cannot be stopped keeps spending tokens. Cancels have slots of their own.
      const cancel = frame.type === 'chat.cancel';
      if ((cancel ? cancelsInFlight : inFlight) >= MAX_FRAMES_IN_FLIGHT)
        return send({ type: 'chat.error', ...about, code: 'too_many_in_flight', detail: `At most ${MAX_FRAMES_IN_FLIGHT} ${cancel ? 'cancels' : 'frames'} of a socket wait for chat at once.` });
      // Every frame that calls chat counts against the caller's rate limits, as a request would.
      if (cancel) cancelsInFlight += 1;
      else inFlight += 1;
      try {
        const verdict = await app.edgeAuth.checker.check({ limits: app.edgeAuth.policies.limitsFor(identity, ip), identity, lease: true, ...(issuedAt === undefined ? {} : { iat: issuedAt }) });
        if (verdict.outcome === 'revoked') return closeWith(CLOSE.unauthenticated, 'credential revoked');
        if (verdict.outcome === 'limited')
          return send({ type: 'chat.error', ...about, code: 'rate_limited', retryAfter: verdict.retryAfterSeconds, detail: `Too many requests; retry in ${verdict.retryAfterSeconds} s.` });
        await callChatFor(frame, identity);
      } finally {
        if (cancel) cancelsInFlight -= 1;
        else inFlight -= 1;
      }
    }

    /** A frame that calls chat, once it has passed the socket's and the caller's limits. */
    async function callChatFor(frame: Exclude<ClientFrame, { type: 'ping' | 'auth' }>, identity: Identity): Promise<void> {
      if (frame.type === 'chat.send') {
        const abort = new AbortController();
        try {
          const res = await callChat(request, identity, 'POST', `/api/v1/chats/${frame.chatId}/messages`, {
            body: { content: frame.content, ...(frame.model ? { model: frame.model } : {}) },
            headers: { accept: 'text/event-stream' },
            signal: AbortSignal.any([abort.signal, gone.signal]),
          });
          if (res.statusCode !== 200) {
            const problem = (await res.body.json().catch(() => ({}))) as { code?: string; detail?: string };
            return send({ type: 'chat.error', requestId: frame.requestId, code: problem.code ?? 'send_failed', detail: problem.detail ?? `chat answered ${res.statusCode}` });
          }
          // The first event names the reply; the rest reaches every socket of the user through
          // the user's channel, so this request can go (the reply outlives it).
          for await (const event of sseEvents(res.body)) {
            if (event.event === 'message') {
              const data = event.data as { assistantMessageId: string; userMessage: unknown };
              remember(data.assistantMessageId, frame.chatId);
              send({ type: 'chat.accepted', requestId: frame.requestId, chatId: frame.chatId, messageId: data.assistantMessageId, userMessage: data.userMessage });
              return;
            }
            if (event.event === 'error') {
              const problem = event.data as { code?: string; detail?: string };
              return send({ type: 'chat.error', requestId: frame.requestId, code: problem.code ?? 'send_failed', detail: problem.detail ?? 'The message was not accepted.' });
            }
          }
          // The stream ended before naming a reply: the send has an answer all the same.
          if (!gone.signal.aborted) send({ type: 'chat.error', requestId: frame.requestId, code: 'send_failed', detail: 'chat ended the reply before it began' });
        } finally {
          abort.abort();
        }
        return;
      }
      if (frame.type === 'chat.cancel') {
        // The reply's id is enough: chat finds its chat when this socket has seen none of its events.
        const chatId = frame.chatId ?? chatOf.get(frame.messageId);
        const path = chatId === undefined ? `/internal/v1/messages/${frame.messageId}/cancel` : `/api/v1/chats/${chatId}/messages/${frame.messageId}/cancel`;
        const res = await callChat(request, identity, 'POST', path, { signal: gone.signal });
        await res.body.dump();
        if (res.statusCode !== 202) send({ type: 'chat.error', messageId: frame.messageId, code: res.statusCode === 404 ? 'not_found' : 'cancel_failed' });
        return;
      }
      // chat.resume: the reply's events after `after`, from chat's journal or database.
      remember(frame.messageId, frame.chatId);
      const res = await callChat(request, identity, 'GET', `/api/v1/chats/${frame.chatId}/messages/${frame.messageId}/stream`, {
        headers: { accept: 'text/event-stream', 'last-event-id': String(frame.after) },
        signal: gone.signal,
      });
      if (res.statusCode !== 200) {
        await res.body.dump();
        return send({ type: 'chat.error', messageId: frame.messageId, code: res.statusCode === 404 ? 'not_found' : 'resume_failed' });
      }
      // A resume can replay a long reply at once: it waits for the socket to drain instead of
      // filling its buffer to the limit (which drops the socket, and the client resumes again).
      // Waiting stops reading chat's stream, so chat's connection is held back too.
      resuming.set(frame.messageId, (resuming.get(frame.messageId) ?? 0) + 1);
      let replayEnded = false;
      try {
        for await (const event of sseEvents(res.body)) {
          if (event.event === 'done' || event.event === 'error') replayEnded = true;
          const live = sentLive.get(frame.messageId);
          if (live && event.id >= live.first && event.id <= live.last) continue;
          if (socket.bufferedAmount > options.maxBufferedBytes / 2) await drained(options.maxBufferedBytes / 4);
          send(replyFrame({ seq: event.id, type: event.event as ReplyEnvelope['type'], data: event.data, messageId: frame.messageId, chatId: frame.chatId }));
        }
        // Chat's stream ended before the reply did: its live events, held back meanwhile, are not
        // all here. Said, so the client resumes again.
        if (!replayEnded && !gone.signal.aborted) send({ type: 'chat.error', messageId: frame.messageId, code: 'resume_incomplete', detail: 'The replay ended before the reply did; send chat.resume again after the last seq received.' });
      } finally {
        const left = (resuming.get(frame.messageId) ?? 1) - 1;
        if (left > 0) resuming.set(frame.messageId, left);
        else resuming.delete(frame.messageId);
      }
    }

    socket.on('message', (raw, isBinary) => {
      if (isBinary) return send({ type: 'error', code: 'invalid_frame', detail: 'Frames are JSON text.' });
      const frame = parseFrame(raw.toString());
      if (typeof frame === 'string') return send({ type: 'error', code: 'invalid_frame', detail: frame });
      handle(frame).catch((error: unknown) => {
        if (gone.signal.aborted) return; // the socket went while chat answered: nobody is left to tell
        app.log.warn({ err: error }, 'socket frame failed');
        // Said about the frame it answers, so a client waiting on that request or reply hears of it.
        const about = frame.type === 'chat.send' ? { type: 'chat.error', requestId: frame.requestId } : 'messageId' in frame ? { type: 'chat.error', messageId: frame.messageId } : { type: 'error' };
        send({ ...about, code: 'internal_error', detail: 'The frame could not be handled.' });
      });
    });
    socket.on('close', (code: number) => end(code));

    const credential = bearer(request.headers.authorization);
    if (credential !== undefined) void start(credential);
  });
}
