import type { Dispatcher } from 'undici';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { HttpProblem, problems, closeStep, type Identity } from '@vivier/service-kit';
import type { Access } from '../proxy/upstreams';
import { AccessTokenVerifier, invalidToken } from './access-token.service';
import { ApiKeyVerifier, looksLikeApiKey } from './api-key.service';
import { JwksCache } from './jwks.service';
import { OpenRequests, listenForRevocations } from './revocation-listener';
import { EdgeChecker, type EdgeVerdict, type LeaseOptions } from '../rate-limit/edge-check.service';
import { RateLimitPolicies, rateLimitHeader, type RateLimitSettings } from '../rate-limit/rate-limit.policy';
import { unscoped } from '../../plugins/unscoped';

/** What a route tells the edge about itself (Fastify route `config`). */
export interface EdgeRouteConfig {
  /** Who may call it; routes without one (/health, /ready, /metrics, 404s) pass untouched. */
  access?: Access;
}

declare module 'fastify' {
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type
  interface FastifyContextConfig extends EdgeRouteConfig {}
}

export interface AuthPluginOptions {
  authUrl: string;
  dispatcher: Dispatcher;
  identitySecret: string;
  jwt: { issuer: string; audience: string; clockToleranceSeconds: number };
  jwks: { ttlSeconds: number; cooldownSeconds: number };
  apiKeyCacheTtlMs: number;
  rateLimits: RateLimitSettings;
  /** Auth's pub/sub channel of revocations (`<REDIS_KEY_PREFIX>auth:revocations`). */
  revocationChannel: string;
  /** How often open requests are checked against the revocation facts in Redis (ms). */
  revocationRecheckMs: number;
  /** Edge leases: requests let through without a Redis round trip (edge-check.service.ts). */
  leases: LeaseOptions;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** `iat` of the access token the caller used (unix seconds); undefined for API keys and public routes. */
    credentialIssuedAt: number | undefined;
  }
  interface FastifyInstance {
    /** The gateway's credential checkers (tests look at the JWKS fetch count). */
    edgeAuth: {
      jwks: JwksCache;
      tokens: AccessTokenVerifier;
      apiKeys: ApiKeyVerifier;
      checker: EdgeChecker;
      /** The rate limits a caller counts against (also per WebSocket frame that calls a service). */
      policies: RateLimitPolicies;
      /** Authenticated requests in flight, ended when auth revokes their credential. */
      openRequests: OpenRequests;
    };
  }
}

const REVOKED_DETAIL: Record<Extract<EdgeVerdict, { outcome: 'revoked' }>['reason'], string> = {
  session: 'The session of this access token was revoked.',
  tokens_invalidated: 'This access token was issued before the account signed out everywhere.',
  user_disabled: 'The account is disabled.',
  api_key: 'The API key is invalid or revoked.',
};

/** The credential of an `Authorization: Bearer …` header (the scheme in any case), if it has one. */
export function bearer(header: string | undefined): string | undefined {
  if (header === undefined || header.length < 8 || header.length > 8192) return undefined;
  if (header.slice(0, 7).toLowerCase() !== 'bearer ') return undefined;
  const credential = header.slice(7).trim();
  return credential === '' ? undefined : credential;
}

/**
 * `.`/`..` segments, plain or percent-encoded. Neither the gateway's router nor the services
 * resolve them, but a normalising hop in between would turn a public prefix
 * (`/api/v1/auth/oauth/../me`) into a protected route: such paths are refused outright.
 */
function hasDotSegment(url: string): boolean {
  const end = url.indexOf('?');
  const path = end === -1 ? url : url.slice(0, end);
  if (!path.includes('.') && !path.includes('%')) return false;
  // Encoded dots and slashes, and backslashes, count as what a server that decodes them would see.
  const decoded = path.replace(/%2e/gi, '.').replace(/%2f|%5c|\\/gi, '/');
  return /(^|\/)\.{1,2}(\/|$)/.test(decoded);
}

function applyVerdictHeaders(reply: FastifyReply, policyHeader: string, verdict: EdgeVerdict): void {
  if (verdict.outcome === 'revoked' || verdict.limits.length === 0) return;
  reply.header('ratelimit-policy', policyHeader);
  reply.header('ratelimit', rateLimitHeader(verdict.limits));
}

function rateLimited(verdict: Extract<EdgeVerdict, { outcome: 'limited' }>): HttpProblem {
  return new HttpProblem(429, 'rate_limited', `Too many requests; retry in ${verdict.retryAfterSeconds} s.`, {
    headers: { 'retry-after': String(verdict.retryAfterSeconds) },
    extensions: { violatedPolicies: verdict.violated },
  });
}

/**
 * The edge's decision for every public route, before anything reaches a service:
 * 1. credentials (access token verified locally against the JWKS, or API key checked by auth);
 * 2. the route's access rule (401 without credentials, 403 for a non-admin on admin routes);
 * 3. one Redis round trip: the caller's revocation state and the rate limits (429);
 * then `request.identity` carries the caller to the proxy, which signs it for the service.
 */
export const authPlugin = unscoped<AuthPluginOptions>('gateway-auth', async (app, options) => {
  const jwks = new JwksCache({
    url: `${options.authUrl}/.well-known/jwks.json`,
    dispatcher: options.dispatcher,
    ttlSeconds: options.jwks.ttlSeconds,
    cooldownSeconds: options.jwks.cooldownSeconds,
    log: app.log,
  });
  const tokens = new AccessTokenVerifier(jwks, options.jwt);
  const apiKeys = new ApiKeyVerifier({
    authUrl: options.authUrl,
    dispatcher: options.dispatcher,
    secret: options.identitySecret,
    ttlMs: options.apiKeyCacheTtlMs,
    log: app.log,
  });
  const checker = new EdgeChecker(app.redis, app.log, options.leases);
  const policies = new RateLimitPolicies(options.rateLimits);
  const openRequests = new OpenRequests();
  app.decorate('edgeAuth', { jwks, tokens, apiKeys, checker, policies, openRequests });
  app.decorateRequest('identity', undefined);
  app.decorateRequest('clientIp', '');
  app.decorateRequest('clientUserAgent', undefined);
  app.decorateRequest('credentialIssuedAt', undefined);

  // Keys are ready before the first token arrives when auth is up; if not, the first token fetches them.
  app.addHook('onReady', async () => {
    void jwks.refresh();
  });
  // Open requests are checked again now and then, and at once after the subscriber reconnects: a
  // revocation whose message was missed still ends them, within REVOCATION_RECHECK_MS.
  // Only against Redis itself: from memory (Redis away) the check would close nothing it should.
  let rechecking = false;
  let again = false;
  let waitingForRedis = false;
  const recheck = async (): Promise<void> => {
    if (rechecking) {
      again = true; // asked while one runs (a reconnect): one more pass once it is done
      return;
    }
    if (openRequests.size === 0) return;
    if (app.redis.status !== 'ready') {
      if (!waitingForRedis) {
        waitingForRedis = true;
        app.redis.once('ready', () => {
          waitingForRedis = false;
          void recheck();
        });
      }
      return;
    }
    rechecking = true;
    try {
      const closed = await openRequests.recheck((identity, iat) => checker.isRevoked(identity, iat));
      if (closed > 0) app.log.info({ closed }, 'closed requests of a revoked credential (recheck)');
    } catch (error) {
      app.log.warn({ err: error }, 'could not recheck the open requests');
    } finally {
      rechecking = false;
      if (again) {
        again = false;
        void recheck();
      }
    }
  };
  const rechecks = setInterval(() => void recheck(), options.revocationRecheckMs);
  rechecks.unref();
  const listener = listenForRevocations({
    redis: app.redis,
    channel: options.revocationChannel,
    log: app.log,
    onMessage: (message) => {
      // A message without a readable user ends every lease.
      checker.revoked(typeof message.userId === 'string' ? message.userId : undefined);
      apiKeys.forget(message);
      const closed = openRequests.closeFor(message);
      if (closed > 0)
        app.log.info({ userId: message.userId, closed }, 'closed requests of a revoked credential');
    },
    onReconnect: () => void recheck(),
    onLive: (live) => checker.revocationFeed(live),
  });
  closeStep(app, 'gateway: revocation listener', async () => {
    clearInterval(rechecks);
    await listener.close();
    await checker.close();
  });

  async function authenticate(
    request: FastifyRequest,
    credential: string,
  ): Promise<{ identity: Identity; iat?: number }> {
    if (looksLikeApiKey(credential)) {
      const identity = await apiKeys.verify(credential, async () => {
        // Asking auth about a key costs the asker: an anonymous per-IP request.
        const verdict = await checker.check({ limits: policies.anonymousLimits(request.clientIp) });
        if (verdict.outcome === 'limited') throw rateLimited(verdict);
      }, { ip: request.clientIp, userAgent: request.clientUserAgent });
      if (!identity) throw invalidToken('The API key is invalid or revoked.');
      return { identity };
    }
    const verified = await tokens.verify(credential);
    return { identity: verified.identity, iat: verified.iat };
  }

  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    const access = request.routeOptions.config.access;
    if (access === undefined) return;
    if (hasDotSegment(request.url))
      throw problems.badRequest('bad_url', 'The path may not contain "." or ".." segments.');
    // request.ip applies the trusted-proxy rules on every read; read it once.
    const ip = request.ip;
    request.clientIp = ip;
    const userAgent = request.headers['user-agent'];
    request.clientUserAgent = userAgent === undefined ? undefined : userAgent.slice(0, 512);

    let identity: Identity | undefined;
    let iat: number | undefined;
    if (access !== 'public') {
      const credential = bearer(request.headers.authorization);
      if (credential === undefined) {
        throw new HttpProblem(
          401,
          'unauthorized',
          'Send an access token or API key: Authorization: Bearer <credential>.',
          {
            headers: { 'www-authenticate': 'Bearer realm="vivier"' },
          },
        );
      }
      ({ identity, iat } = await authenticate(request, credential));
      if (access === 'admin' && identity.role !== 'admin')
        throw problems.forbidden('This needs the admin role.');
    }

    const limits = policies.limitsFor(identity, ip);
    if (identity === undefined && limits.length === 0) return;
    // Admin actions ask Redis every time; other callers may be let through from a lease.
    const verdict = await checker.check({ limits, identity, iat, lease: access !== 'admin' });
    if (verdict.outcome === 'revoked') {
      // A revoked key's fact outran its message (or the message was missed): its answer goes too.
      if (verdict.reason === 'api_key') apiKeys.forget({ keyId: identity?.keyId });
      throw invalidToken(REVOKED_DETAIL[verdict.reason]);
    }
    // Admin actions are the ones a stolen, revoked admin token would abuse: without a
    // revocation answer they wait for Redis (fail closed) while everything else fails open.
    if (verdict.degraded && access === 'admin') {
      throw problems.unavailable(
        'revocation_check_unavailable',
        'Admin routes need the revocation check, which is unavailable; retry shortly.',
      );
    }
    applyVerdictHeaders(reply, policies.policyHeader(identity), verdict);
    if (verdict.outcome === 'limited') throw rateLimited(verdict);
    request.identity = identity;
    request.credentialIssuedAt = iat;
  });
});
