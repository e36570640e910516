import { createHmac, timingSafeEqual } from 'node:crypto';
import fp from 'fastify-plugin';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { problems } from './errors';

/**
 * Who is calling, as the gateway verified it (access token or API key).
 */
export interface Identity {
  /** User id. */
  sub: string;
  role: 'user' | 'admin';
  /** Session (login family) id for access tokens; absent for API keys. */
  sid?: string;
  /** API key id when the caller used one. */
  keyId?: string;
  kind: 'access_token' | 'api_key';
}

/**
 * What the gateway vouches for on every forwarded request: the client's address (after its
 * trusted-proxy rules) and, when the caller authenticated, the identity. Services trust it only
 * with a valid HMAC from the gateway (INTERNAL_IDENTITY_SECRET, shared by the gateway and the
 * services and nobody else); the gateway strips both headers from client requests, so a client
 * cannot forge them.
 */
export interface GatewayContext {
  ip: string;
  userAgent?: string;
  identity?: Identity;
  /** Unix seconds after which a service refuses the header (bounds replay). */
  exp: number;
}

export const CONTEXT_HEADER = 'x-vivier-context';
export const CONTEXT_SIGNATURE_HEADER = 'x-vivier-context-signature';
/** Service-to-service calls that are not on behalf of a user (the gateway asking auth about an API key). */
export const INTERNAL_CALL_HEADER = 'x-vivier-internal';

function sign(payload: string, secret: string): string {
  return createHmac('sha256', secret).update(payload).digest('base64url');
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The two headers the gateway adds to a forwarded request. */
export function signContext(context: GatewayContext, secret: string): Record<string, string> {
  const payload = Buffer.from(JSON.stringify(context)).toString('base64url');
  return { [CONTEXT_HEADER]: payload, [CONTEXT_SIGNATURE_HEADER]: sign(payload, secret) };
}

/** Returns the context if the headers are present, signed with `secret` and unexpired. */
export function verifyContext(
  headers: Record<string, string | string[] | undefined>,
  secret: string,
  nowSeconds = Math.floor(Date.now() / 1000),
): GatewayContext | undefined {
  const payload = headers[CONTEXT_HEADER];
  const signature = headers[CONTEXT_SIGNATURE_HEADER];
  if (typeof payload !== 'string' || typeof signature !== 'string') return undefined;
  if (!safeEqual(sign(payload, secret), signature)) return undefined;
  try {
    const context = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as GatewayContext;
    if (typeof context.ip !== 'string' || typeof context.exp !== 'number' || context.exp < nowSeconds) return undefined;
    const identity = context.identity;
    if (identity && (typeof identity.sub !== 'string' || (identity.role !== 'user' && identity.role !== 'admin'))) return undefined;
    return context;
  } catch {
    return undefined;
  }
}

/**
 * verifyContext with a memory: the gateway signs a context once per caller and second, so a
 * busy caller's requests bring the same header pair again and again. A pair verified before is
 * known by its signature and accepted without another HMAC and parse, when the payload is the
 * same string and the context has not expired since. Bounded: when `max` pairs are held, the
 * memory starts again empty.
 */
export class ContextVerifier {
  private readonly verified = new Map<string, { payload: string; context: GatewayContext }>();

  constructor(
    private readonly secret: string,
    private readonly max = 4096,
    private readonly verify: typeof verifyContext = verifyContext,
  ) {}

  context(
    headers: Record<string, string | string[] | undefined>,
    nowSeconds = Math.floor(Date.now() / 1000),
  ): GatewayContext | undefined {
    const payload = headers[CONTEXT_HEADER];
    const signature = headers[CONTEXT_SIGNATURE_HEADER];
    if (typeof payload !== 'string' || typeof signature !== 'string') return undefined;
    const known = this.verified.get(signature);
    if (known !== undefined && known.payload === payload) return known.context.exp < nowSeconds ? undefined : known.context;
    const context = this.verify(headers, this.secret, nowSeconds);
    if (context !== undefined) {
      if (this.verified.size >= this.max) this.verified.clear();
      this.verified.set(signature, { payload, context });
    }
    return context;
  }
}

/** Header for a service-to-service call: a timestamp and its HMAC (valid for 60 s). */
export function signInternalCall(secret: string, nowSeconds = Math.floor(Date.now() / 1000)): Record<string, string> {
  const stamp = `internal.${nowSeconds}`;
  return { [INTERNAL_CALL_HEADER]: `${nowSeconds}.${sign(stamp, secret)}` };
}

export function verifyInternalCall(
  headers: Record<string, string | string[] | undefined>,
  secret: string,
  nowSeconds = Math.floor(Date.now() / 1000),
): boolean {
  const value = headers[INTERNAL_CALL_HEADER];
  if (typeof value !== 'string') return false;
  const [ts, mac] = value.split('.', 2);
  const when = Number(ts);
  if (!Number.isInteger(when) || Math.abs(nowSeconds - when) > 60 || !mac) return false;
  return safeEqual(sign(`internal.${when}`, secret), mac);
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set when the gateway vouched for an authenticated caller. */
    identity: Identity | undefined;
    /** The client's address as the gateway saw it; the peer address for direct calls. */
    clientIp: string;
    clientUserAgent: string | undefined;
  }
}

/**
 * Reads the gateway's signed context on every request. Routes that need a caller use
 * `requireIdentity` (401 otherwise) or `requireAdmin` (403 for non-admins); routes for other
 * services only use `requireInternalCall`.
 */
export const identityPlugin = fp<{ secret: string }>(
  async (app, { secret }) => {
    app.decorateRequest('identity', undefined);
    app.decorateRequest('clientIp', '');
    app.decorateRequest('clientUserAgent', undefined);
    const verifier = new ContextVerifier(secret);
    app.addHook('onRequest', async (request) => {
      const context = verifier.context(request.headers);
      request.clientIp = context?.ip ?? request.ip;
      request.clientUserAgent = context ? context.userAgent : request.headers['user-agent'];
      request.identity = context?.identity;
      // Onto the request's own logger (Fastify makes one per request; reply.log is the same
      // object): no second child logger per request. Every service app logs with pino
      // (createServiceApp), whose loggers take more bindings.
      if (request.identity) (request.log as Logger).setBindings({ userId: request.identity.sub });
    });
    app.decorate('requireInternalCall', async (request: FastifyRequest) => {
      if (!verifyInternalCall(request.headers, secret)) throw problems.forbidden('Internal route.');
    });
  },
  { name: 'identity' },
);

declare module 'fastify' {
  interface FastifyInstance {
    /** preHandler for routes only other services may call. */
    requireInternalCall: (request: FastifyRequest) => Promise<void>;
  }
}

export async function requireIdentity(request: FastifyRequest, _reply: FastifyReply): Promise<void> {
  if (!request.identity) throw problems.unauthorized();
}

export async function requireAdmin(request: FastifyRequest, _reply: FastifyReply): Promise<void> {
  if (!request.identity) throw problems.unauthorized();
  if (request.identity.role !== 'admin') throw problems.forbidden('This needs the admin role.');
}

/** The caller of a route guarded by requireIdentity. */
export function caller(request: FastifyRequest): Identity {
  if (!request.identity) throw problems.unauthorized();
  return request.identity;
}
