import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import type { Identity } from '@vivier/service-kit';

/** One rate limit: `quota` requests per `windowSeconds`, for one partition key. */
export interface Limit {
  /** Policy name, as sent in RateLimit-Policy / RateLimit. */
  policy: string;
  key: string;
  quota: number;
  windowSeconds: number;
}

export interface LimitState {
  policy: string;
  remaining: number;
  /** Seconds until the quota is whole again (the `t` of the RateLimit field). */
  resetSeconds: number;
}

export type EdgeVerdict =
  | { outcome: 'allowed'; limits: LimitState[]; degraded: boolean }
  | {
      outcome: 'limited';
      limits: LimitState[];
      retryAfterSeconds: number;
      violated: string[];
      degraded: boolean;
    }
  | { outcome: 'revoked'; reason: 'session' | 'tokens_invalidated' | 'user_disabled' | 'api_key'; degraded: boolean };

export interface EdgeCheck {
  limits: Limit[];
  /** The verified caller, whose revocation state is checked; `iat` for access tokens. */
  identity?: Identity;
  iat?: number;
}

/**
 * One script, one round trip per request: the caller's revocation facts (written by auth) and
 * every rate limit that applies (GCRA: one timestamp per key, no lists, no cleanup job).
 * Nothing is consumed when the caller is revoked or any limit is exceeded.
 *
 * KEYS: the limit keys, then for mode 1 (access token) the session, tokens-valid-after and
 * user-disabled keys, for mode 2 (API key) the user-disabled and revoked-key keys.
 * ARGV: number of limits, mode, iat, then per limit its emission interval and burst (ms).
 * Returns {code, retryMs, validAfter, remaining1, resetMs1, ...}; code 0 allowed, 1 limited,
 * 2 session revoked, 3 issued before tokens-valid-after, 4 user disabled, 5 API key revoked.
 */
const SCRIPT = `
local n = tonumber(ARGV[1])
local mode = tonumber(ARGV[2])
local validAfter = 0
if mode == 1 then
  local v = redis.call('MGET', KEYS[n + 1], KEYS[n + 2], KEYS[n + 3])
  validAfter = tonumber(v[2]) or 0
  if v[1] then return {2, 0, validAfter} end
  if v[3] then return {4, 0, validAfter} end
  if tonumber(ARGV[3]) < validAfter then return {3, 0, validAfter} end
elseif mode == 2 then
  local v = redis.call('MGET', KEYS[n + 1], KEYS[n + 2])
  if v[1] then return {4, 0, 0} end
  if v[2] then return {5, 0, 0} end
end
if n == 0 then return {0, 0, validAfter} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {0, 0, validAfter}
local tats = {}
local retry = 0
for i = 1, n do
  local interval = tonumber(ARGV[2 + 2 * i])
  local burst = tonumber(ARGV[3 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or 0) or 0
  if tat < now then tat = now end
  local newTat = tat + interval
  local allowAt = newTat - burst
  if now < allowAt then
    if allowAt - now > retry then retry = allowAt - now end
    out[#out + 1] = 0
    out[#out + 1] = math.ceil(tat - now)
  else
    out[#out + 1] = math.floor((now - allowAt) / interval)
    out[#out + 1] = math.ceil(newTat - now)
  end
  tats[i] = newTat
end
if retry > 0 then
  out[1] = 1
  out[2] = math.ceil(retry)
  return out
end
for i = 1, n do
  redis.call('SET', KEYS[i], string.format('%.3f', tats[i]), 'PX', math.max(1, math.ceil(tats[i] - now)))
end
return out
`;
const SCRIPT_SHA = createHash('sha1').update(SCRIPT).digest('hex');

/** Keys written by auth (same key prefix as ours, so given without one). */
const revocationKeys = {
  session: (sid: string) => `auth:revoked-session:${sid}`,
  validAfter: (userId: string) => `auth:tokens-valid-after:${userId}`,
  disabled: (userId: string) => `auth:user-disabled:${userId}`,
  apiKey: (keyId: string) => `auth:revoked-api-key:${keyId}`,
};

const REDIS_TIMEOUT_MS = 250;
const MEMORY_LIMIT = 50_000;
const REMEMBER_REVOKED_MS = 24 * 3600 * 1000;

/**
 * Runs the check in Redis; while Redis is away (not connected, an error, or no answer within
 * 250–500 ms) it answers from memory instead — the documented policy (apps/gateway/README.md):
 * - rate limits: the same GCRA in this process, so each gateway instance enforces the quotas on
 *   its own (N instances allow up to N times the quota);
 * - revocation: fail open (the signature, `exp` and the 15-minute token lifetime still hold), except
 *   for what this instance has already learned from Redis (revoked sessions, disabled users,
 *   tokens-valid-after), which it keeps applying.
 */
export class EdgeChecker {
  private readonly localTats = new Map<string, number>();
  private readonly revokedSessions = new Map<string, number>();
  private readonly disabledUsers = new Map<string, number>();
  private readonly revokedApiKeys = new Map<string, number>();
  private readonly validAfter = new Map<string, number>();
  private redisDown = false;
  private sharedDeadline: { at: number; promise: Promise<never> } | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly log: FastifyBaseLogger,
  ) {}

  async check(input: EdgeCheck): Promise<EdgeVerdict> {
    const { limits, identity } = input;
    const mode = identity === undefined ? 0 : identity.kind === 'access_token' && identity.sid ? 1 : 2;
    if (this.redis.status === 'ready') {
      const keys = limits.map((l) => `gateway:rl:${l.policy}:${l.key}`);
      if (mode === 1)
        keys.push(
          revocationKeys.session(identity!.sid!),
          revocationKeys.validAfter(identity!.sub),
          revocationKeys.disabled(identity!.sub),
        );
      else if (mode === 2)
        keys.push(revocationKeys.disabled(identity!.sub), revocationKeys.apiKey(identity!.keyId ?? ''));
      const args: Array<string | number> = [limits.length, mode, input.iat ?? 0];
      for (const l of limits) args.push((l.windowSeconds * 1000) / l.quota, l.windowSeconds * 1000);
      try {
        const reply = await this.run(keys, args);
        this.markRedis(false);
        return this.verdictFromRedis(reply, input, mode);
      } catch (error) {
        this.markRedis(true, error);
      }
    } else {
      this.markRedis(true);
    }
    return this.checkInMemory(input, mode);
  }

  /** Whether a verified credential has been revoked (the revocation facts alone, no limit consumed). */
  async isRevoked(identity: Identity, iat: number | undefined): Promise<boolean> {
    return (await this.check({ limits: [], identity, ...(iat === undefined ? {} : { iat }) })).outcome === 'revoked';
  }

  private async run(keys: string[], args: Array<string | number>): Promise<number[]> {
    const call = this.redis.evalsha(SCRIPT_SHA, keys.length, ...keys, ...args).catch((error: Error) => {
      if (!error.message.startsWith('NOSCRIPT')) throw error;
      return this.redis.eval(SCRIPT, keys.length, ...keys, ...args);
    });
    return (await Promise.race([call, this.deadline()])) as number[];
  }

  /**
   * A timeout shared by all requests of a quarter second (between 250 and 500 ms for each): one
   * timer per 250 ms instead of one per request, which showed in the profile.
   */
  private deadline(): Promise<never> {
    const now = Date.now();
    if (!this.sharedDeadline || this.sharedDeadline.at - now < REDIS_TIMEOUT_MS) {
      const at = now + 2 * REDIS_TIMEOUT_MS;
      const promise = new Promise<never>((_, reject) => {
        setTimeout(
          () => reject(new Error(`no answer from Redis within ${REDIS_TIMEOUT_MS} ms`)),
          2 * REDIS_TIMEOUT_MS,
        ).unref();
      });
      promise.catch(() => undefined); // settled races ignore it; nothing else may see it unhandled
      this.sharedDeadline = { at, promise };
    }
    return this.sharedDeadline.promise;
  }

  private verdictFromRedis(reply: number[], input: EdgeCheck, mode: number): EdgeVerdict {
    const [code = 0, retryMs = 0, validAfter = 0] = reply;
    const identity = input.identity;
    if (identity && mode !== 0) this.learn(identity, code, validAfter);
    if (code === 2) return { outcome: 'revoked', reason: 'session', degraded: false };
    if (code === 3) return { outcome: 'revoked', reason: 'tokens_invalidated', degraded: false };
    if (code === 4) return { outcome: 'revoked', reason: 'user_disabled', degraded: false };
    if (code === 5) return { outcome: 'revoked', reason: 'api_key', degraded: false };
    const states: LimitState[] = input.limits.map((l, i) => ({
      policy: l.policy,
      remaining: Math.max(0, reply[3 + 2 * i] ?? 0),
      resetSeconds: Math.ceil((reply[4 + 2 * i] ?? 0) / 1000),
    }));
    if (code === 1) {
      return {
        outcome: 'limited',
        limits: states,
        retryAfterSeconds: Math.max(1, Math.ceil(retryMs / 1000)),
        violated: states.filter((s) => s.remaining === 0).map((s) => s.policy),
        degraded: false,
      };
    }
    return { outcome: 'allowed', limits: states, degraded: false };
  }

  /** What Redis told us about a caller, kept for the time Redis is away. */
  private learn(identity: Identity, code: number, validAfter: number): void {
    const now = Date.now();
    if (code === 2 && identity.sid) remember(this.revokedSessions, identity.sid, now + REMEMBER_REVOKED_MS);
    if (code === 5 && identity.keyId) remember(this.revokedApiKeys, identity.keyId, now + REMEMBER_REVOKED_MS);
    if (code === 4) remember(this.disabledUsers, identity.sub, now + REMEMBER_REVOKED_MS);
    else if ((code === 0 || code === 1) && this.disabledUsers.size > 0)
      this.disabledUsers.delete(identity.sub);
    if (validAfter > 0)
      remember(this.validAfter, identity.sub, Math.max(validAfter, this.validAfter.get(identity.sub) ?? 0));
  }

  private checkInMemory(input: EdgeCheck, mode: number): EdgeVerdict {
    const now = Date.now();
    const identity = input.identity;
    if (identity && mode !== 0) {
      if (identity.sid && (this.revokedSessions.get(identity.sid) ?? 0) > now)
        return { outcome: 'revoked', reason: 'session', degraded: true };
      if ((this.disabledUsers.get(identity.sub) ?? 0) > now)
        return { outcome: 'revoked', reason: 'user_disabled', degraded: true };
      if (identity.keyId && (this.revokedApiKeys.get(identity.keyId) ?? 0) > now)
        return { outcome: 'revoked', reason: 'api_key', degraded: true };
      if (mode === 1 && (input.iat ?? 0) < (this.validAfter.get(identity.sub) ?? 0)) {
        return { outcome: 'revoked', reason: 'tokens_invalidated', degraded: true };
      }
    }
    const states: LimitState[] = [];
    const next: number[] = [];
    let retryMs = 0;
    for (const l of input.limits) {
      const interval = (l.windowSeconds * 1000) / l.quota;
      const burst = l.windowSeconds * 1000;
      const tat = Math.max(this.localTats.get(`${l.policy}:${l.key}`) ?? now, now);
      const newTat = tat + interval;
      const allowAt = newTat - burst;
      if (now < allowAt) {
        retryMs = Math.max(retryMs, allowAt - now);
        states.push({ policy: l.policy, remaining: 0, resetSeconds: Math.ceil((tat - now) / 1000) });
      } else {
        states.push({
          policy: l.policy,
          remaining: Math.floor((now - allowAt) / interval),
          resetSeconds: Math.ceil((newTat - now) / 1000),
        });
      }
      next.push(newTat);
    }
    if (retryMs > 0) {
      return {
        outcome: 'limited',
        limits: states,
        retryAfterSeconds: Math.max(1, Math.ceil(retryMs / 1000)),
        violated: states.filter((s) => s.remaining === 0).map((s) => s.policy),
        degraded: true,
      };
    }
    if (this.localTats.size > MEMORY_LIMIT) {
      // Keys whose quota is whole again carry no state; if a flood of distinct keys leaves too
      // many live ones, the oldest go (they are let through sooner, never refused wrongly).
      for (const [key, tat] of this.localTats) if (tat < now) this.localTats.delete(key);
      for (const key of this.localTats.keys()) {
        if (this.localTats.size <= MEMORY_LIMIT / 2) break;
        this.localTats.delete(key);
      }
    }
    input.limits.forEach((l, i) => this.localTats.set(`${l.policy}:${l.key}`, next[i]!));
    return { outcome: 'allowed', limits: states, degraded: true };
  }

  private markRedis(down: boolean, error?: unknown): void {
    if (down === this.redisDown) return;
    this.redisDown = down;
    if (down) {
      this.log.warn(
        { err: error },
        'Redis unavailable: rate limits are enforced per gateway instance in memory, revocation checks fail open (known revocations still apply)',
      );
    } else {
      this.log.info('Redis is back: rate limits and revocation checks use it again');
    }
  }
}

function remember(map: Map<string, number>, key: string, value: number): void {
  if (map.size >= MEMORY_LIMIT && !map.has(key)) {
    const oldest = map.keys().next().value;
    if (oldest !== undefined) map.delete(oldest);
  }
  map.set(key, value);
}
