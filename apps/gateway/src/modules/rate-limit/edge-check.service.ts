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
  /** May the answer come from a lease (admin routes and revocation rechecks say no: they ask Redis every time). */
  lease?: boolean;
}

export interface LeaseOptions {
  /** Most requests one lease lets through (0 or 1: every request asks Redis). */
  maxRequests: number;
  /** How long a lease lives (ms): the bound on a revocation whose message was lost on a connection that did not close. */
  ttlMs: number;
}

/**
 * One script, one round trip: the caller's revocation facts (written by auth) and every rate limit
 * that applies (GCRA: one timestamp per key, no lists, no cleanup job). Nothing is consumed when
 * the caller is revoked or any limit is exceeded.
 *
 * A lease: `want` requests taken at once, granted only while every limit keeps room for `far`
 * times as many after them (otherwise just this request, the exact check). `back` requests of an
 * earlier lease on the same keys that were never used are given back first (their emission
 * intervals taken off the timestamp), so a lease costs the caller nothing it does not use.
 * `want` 0 gives back and takes nothing.
 *
 * KEYS: the limit keys, then for mode 1 (access token) the session, tokens-valid-after and
 * user-disabled keys, for mode 2 (API key) the user-disabled and revoked-key keys.
 * ARGV: number of limits, mode, iat, want, far, back, then per limit its emission interval and burst (ms).
 * Returns {code, retryMs, validAfterMs, granted, remaining1, resetMs1, ...} (tokens-valid-after and
 * `iat` are seconds with milliseconds, validAfterMs whole milliseconds); code 0 allowed, 1 limited,
 * 2 session revoked, 3 issued before tokens-valid-after, 4 user disabled, 5 API key revoked.
 */
const SCRIPT = `
local n = tonumber(ARGV[1])
local mode = tonumber(ARGV[2])
local want = tonumber(ARGV[4])
local far = tonumber(ARGV[5])
local back = tonumber(ARGV[6])
local now = 0
if n > 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
if back > 0 then
  for i = 1, n do
    local tat = tonumber(redis.call('GET', KEYS[i]) or 0) or 0
    if tat > now then
      tat = tat - back * tonumber(ARGV[5 + 2 * i])
      if tat > now then
        redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - now)))
      else
        redis.call('DEL', KEYS[i])
      end
    end
  end
end
if want == 0 then return {0, 0, 0, 0} end
local validAfter = 0
local validAfterMs = 0
if mode == 1 then
  local v = redis.call('MGET', KEYS[n + 1], KEYS[n + 2], KEYS[n + 3])
  validAfter = tonumber(v[2]) or 0
  validAfterMs = math.floor(validAfter * 1000)
  if v[1] then return {2, 0, validAfterMs, 0} end
  if v[3] then return {4, 0, validAfterMs, 0} end
  if tonumber(ARGV[3]) < validAfter then return {3, 0, validAfterMs, 0} end
elseif mode == 2 then
  local v = redis.call('MGET', KEYS[n + 1], KEYS[n + 2])
  if v[1] then return {4, 0, 0, 0} end
  if v[2] then return {5, 0, 0, 0} end
end
if n == 0 then return {0, 0, validAfterMs, want} end
local function take(k)
  local out = {0, 0, validAfterMs, k}
  local tats = {}
  local retry = 0
  for i = 1, n do
    local interval = tonumber(ARGV[5 + 2 * i])
    local burst = tonumber(ARGV[6 + 2 * i])
    local tat = tonumber(redis.call('GET', KEYS[i]) or 0) or 0
    if tat < now then tat = now end
    local newTat = tat + k * interval
    local allowAt = newTat - burst
    if now < allowAt then
      if allowAt - now > retry then retry = allowAt - now end
      out[#out + 1] = 0
      out[#out + 1] = math.ceil(tat - now)
    else
      local remaining = math.floor((now - allowAt) / interval)
      if k > 1 and remaining < far * k then retry = 1 end
      out[#out + 1] = remaining
      out[#out + 1] = math.ceil(newTat - now)
    end
    tats[i] = newTat
  end
  return retry, out, tats
end
local retry, out, tats = 0, nil, nil
if want > 1 then retry, out, tats = take(want) end
if want <= 1 or retry > 0 then retry, out, tats = take(1) end
if retry > 0 then
  out[1] = 1
  out[2] = math.ceil(retry)
  out[4] = 0
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
/** How long a user's latest revocation message is remembered against grants on their way (past the Redis deadline by far). */
const REVOCATIONS_KEPT_MS = 8 * REDIS_TIMEOUT_MS;
/** A lease of more than one request needs room for this many times as many after it, in every limit. */
const LEASE_FAR = 4;

/** The script's keys and arguments for the limits (in that order; revocation keys follow the limit keys). */
function limitKeys(limits: Limit[]): string[] {
  return limits.map((l) => `gateway:rl:${l.policy}:${l.key}`);
}
function scriptArgs(limits: Limit[], mode: number, iat: number, want: number, back: number): Array<string | number> {
  const args: Array<string | number> = [limits.length, mode, iat, want, LEASE_FAR, back];
  for (const l of limits) args.push((l.windowSeconds * 1000) / l.quota, l.windowSeconds * 1000);
  return args;
}

/**
 * Requests one caller (credential, client IP) may still make on this instance without asking Redis:
 * taken from the shared GCRA buckets in one script, with the revocation facts read in the same script.
 */
interface Lease {
  userId: string;
  limits: Limit[];
  /** Requests left. */
  units: number;
  /** Requests of the last grant (the next one doubles it when this one is used up in time). */
  size: number;
  /** Requests let through since the last grant (the size of the next one when this one expires). */
  used: number;
  expiresAt: number;
  /** Remaining in Redis after the last grant, and when each quota is whole again (epoch ms). */
  remaining: number[];
  resetAt: number[];
  /**
   * A grant on its way: requests arriving meanwhile wait for it instead of asking for their own.
   * It tells them whether it became a lease with room for more (if not, they ask Redis at once).
   */
  pending?: Promise<boolean>;
}

/**
 * Runs the check in Redis; while Redis is away (not connected, an error, or no answer within
 * 250–500 ms) it answers from memory instead — the documented policy (apps/gateway/README.md):
 * - rate limits: the same GCRA in this process, so each gateway instance enforces the quotas on
 *   its own (N instances allow up to N times the quota);
 * - revocation: fail open (the signature, `exp` and the 15-minute token lifetime still hold), except
 *   for what this instance has already learned from Redis (revoked sessions, disabled users,
 *   tokens-valid-after), which it keeps applying.
 *
 * Leases: a caller far from their limits asks Redis once for several requests (doubling up to
 * `maxRequests` while they are used up within `ttlMs`), and the next ones are let through from
 * memory. The revocation facts were read in the script that granted the lease; what revokes them
 * later reaches the instance as auth's pub/sub message, which ends the user's leases at once. So
 * leases are granted only while that subscription is live: its loss ends them all, a message that
 * arrives while a grant is on its way keeps that grant from becoming a lease, and `ttlMs` bounds
 * the case of a message lost on a connection that never closed. Requests of a lease not used
 * before it expires are given back to the buckets.
 */
export class EdgeChecker {
  private readonly localTats = new Map<string, number>();
  private readonly revokedSessions = new Map<string, number>();
  private readonly disabledUsers = new Map<string, number>();
  private readonly revokedApiKeys = new Map<string, number>();
  private readonly validAfter = new Map<string, number>();
  private redisDown = false;
  private sharedDeadline: { at: number; promise: Promise<never> } | undefined;
  private readonly leases = new Map<string, Lease>();
  private readonly leaseMax: number;
  private readonly leaseTtlMs: number;
  private feedLive = false;
  /** Revocation messages so far, and per user the count at their latest (kept a few seconds): a grant sent before it is not kept. */
  private revocations = 0;
  private readonly userRevocations = new Map<string, { at: number; revocations: number }>();
  /** Breaks of the subscription (and unreadable messages) so far: a grant sent before the latest is not kept. */
  private feedGeneration = 0;
  private readonly leasesByUser = new Map<string, Set<string>>();
  /** Until when every lease is live and the map is full: no sweep per new caller meanwhile. */
  private fullUntil = 0;
  private readonly sweeper: NodeJS.Timeout | undefined;
  /** Scripts run in Redis, requests let through from a lease, losses of the revocation feed (tests and benchmarks read them). */
  readonly stats = { scripts: 0, leased: 0, feedLosses: 0 };

  constructor(
    private readonly redis: Redis,
    private readonly log: FastifyBaseLogger,
    leases: LeaseOptions = { maxRequests: 0, ttlMs: 1000 },
  ) {
    this.leaseMax = leases.maxRequests;
    this.leaseTtlMs = leases.ttlMs;
    if (this.leaseMax > 1) {
      this.sweeper = setInterval(() => this.sweep(Date.now()), this.leaseTtlMs);
      this.sweeper.unref();
    }
  }

  async check(input: EdgeCheck): Promise<EdgeVerdict> {
    const { limits, identity } = input;
    const mode = identity === undefined ? 0 : identity.kind === 'access_token' && identity.sid ? 1 : 2;
    let leaseKey = this.leaseKeyOf(input, mode);
    let lease: Lease | undefined;
    if (leaseKey !== undefined) {
      lease = this.leases.get(leaseKey);
      // Behind a grant on its way, and behind the next one a waiter sent when that one was used up;
      // a grant of one (near the limit), a refusal or a timeout sends every waiter to Redis at once.
      while (lease?.pending) {
        const useful = await lease.pending;
        lease = this.leases.get(leaseKey);
        const served = lease && this.fromLease(lease, Date.now());
        if (served) return served;
        if (!useful) break;
      }
      const served = lease && this.fromLease(lease, Date.now());
      if (served) return served;
    }
    if (this.redis.status === 'ready') {
      let want = 1;
      let back = 0;
      let granted: ((useful: boolean) => void) | undefined;
      let useful = false;
      if (leaseKey !== undefined) {
        if (lease) {
          want =
            lease.expiresAt > Date.now()
              ? Math.min(this.leaseMax, lease.size * 2)
              : Math.max(1, Math.min(this.leaseMax, lease.used));
          back = lease.units;
          lease.units = 0;
          if (!lease.pending) lease.pending = new Promise<boolean>((resolve) => (granted = resolve));
        } else if (this.leases.size >= MEMORY_LIMIT) {
          const now = Date.now();
          if (now >= this.fullUntil) this.sweep(now);
          if (this.leases.size >= MEMORY_LIMIT) {
            this.fullUntil = now + this.leaseTtlMs;
            leaseKey = undefined;
          }
        }
      }
      const keys = limitKeys(limits);
      if (mode === 1)
        keys.push(
          revocationKeys.session(identity!.sid!),
          revocationKeys.validAfter(identity!.sub),
          revocationKeys.disabled(identity!.sub),
        );
      else if (mode === 2)
        keys.push(revocationKeys.disabled(identity!.sub), revocationKeys.apiKey(identity!.keyId ?? ''));
      const args = scriptArgs(limits, mode, input.iat ?? 0, want, back);
      const sent = { at: Date.now(), revocations: this.revocations, feed: this.feedGeneration };
      let call: Promise<number[]> | undefined;
      try {
        call = this.send(keys, args);
        const reply = await Promise.race([call, this.deadline()]);
        this.markRedis(false);
        const verdict = this.verdictFromRedis(reply, input, mode);
        if (leaseKey !== undefined && verdict.outcome === 'allowed')
          useful = this.keepLease(leaseKey, input, reply, verdict, sent);
        // Redis says this credential is revoked: what this instance holds for the user ends too.
        if (verdict.outcome === 'revoked') this.endLeasesOf(identity!.sub);
        return verdict;
      } catch (error) {
        this.markRedis(true, error);
        // A grant that answers after the deadline still took its requests: they go back.
        if (want > 1) void call?.then((late) => this.giveBack(limits, (late[3] ?? 0) - 1), () => undefined);
      } finally {
        if (granted) {
          lease!.pending = undefined;
          granted(useful);
        }
      }
    } else {
      this.markRedis(true);
    }
    return this.checkInMemory(input, mode);
  }

  /**
   * Auth published a revocation: the user's leases end now (the next request asks Redis), and a
   * grant for the user on its way when it arrived is not kept. Without a user (an unreadable
   * message), every lease ends.
   */
  revoked(userId: string | undefined): void {
    if (userId === undefined) {
      this.feedGeneration += 1;
      for (const [key, lease] of this.leases) this.dropLease(key, lease);
      return;
    }
    this.revocations += 1;
    if (this.userRevocations.size >= MEMORY_LIMIT) this.pruneUserRevocations(Date.now());
    if (this.userRevocations.size >= MEMORY_LIMIT) this.revoked(undefined);
    else this.userRevocations.set(userId, { at: Date.now(), revocations: this.revocations });
    this.endLeasesOf(userId);
  }

  private endLeasesOf(userId: string): void {
    const keys = this.leasesByUser.get(userId);
    if (!keys) return;
    for (const key of [...keys]) {
      const lease = this.leases.get(key);
      if (lease) this.dropLease(key, lease);
    }
  }

  /** Forgets a lease; what it still holds goes back. */
  private dropLease(key: string, lease: Lease): void {
    void this.giveBack(lease.limits, lease.units);
    lease.units = 0;
    this.leases.delete(key);
    const keys = this.leasesByUser.get(lease.userId);
    keys?.delete(key);
    if (keys?.size === 0) this.leasesByUser.delete(lease.userId);
  }

  /** Revocation messages older than any grant that could still be kept carry nothing. */
  private pruneUserRevocations(now: number): void {
    for (const [userId, seen] of this.userRevocations) {
      if (now - seen.at > REVOCATIONS_KEPT_MS) this.userRevocations.delete(userId);
    }
  }

  /** Whether auth's revocation messages are arriving; leases are granted and used only while they are. */
  revocationFeed(live: boolean): void {
    if (live === this.feedLive) return;
    this.feedLive = live;
    if (!live) {
      this.stats.feedLosses += 1;
      this.revoked(undefined);
    }
  }

  /** Whether requests may be let through from leases now. */
  get leasing(): boolean {
    return this.leaseMax > 1 && this.feedLive;
  }

  /** Gives back what the leases still hold (the instance is closing). */
  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    this.feedLive = false;
    const returns: Array<Promise<unknown>> = [];
    for (const lease of this.leases.values()) if (lease.units > 0) returns.push(this.giveBack(lease.limits, lease.units));
    this.leases.clear();
    this.leasesByUser.clear();
    await Promise.allSettled(returns);
  }

  private leaseKeyOf(input: EdgeCheck, mode: number): string | undefined {
    if (!input.lease || mode === 0 || this.leaseMax <= 1 || !this.feedLive) return undefined;
    const identity = input.identity!;
    let key = `${mode} ${identity.sub} ${identity.sid ?? ''} ${identity.keyId ?? ''} ${input.iat ?? ''}`;
    for (const l of input.limits) key += ` ${l.policy}:${l.key}`;
    return key;
  }

  private fromLease(lease: Lease, now: number): EdgeVerdict | undefined {
    if (lease.units <= 0 || lease.expiresAt <= now) return undefined;
    lease.units -= 1;
    lease.used += 1;
    this.stats.leased += 1;
    return {
      outcome: 'allowed',
      limits: lease.limits.map((l, i) => ({
        policy: l.policy,
        remaining: lease.remaining[i]! + lease.units,
        resetSeconds: Math.max(1, Math.ceil((lease.resetAt[i]! - now) / 1000)),
      })),
      degraded: false,
    };
  }

  /** Keeps what a script granted beyond this request, unless a revocation arrived while it ran. */
  private keepLease(
    key: string,
    input: EdgeCheck,
    reply: number[],
    verdict: Extract<EdgeVerdict, { outcome: 'allowed' }>,
    sent: { at: number; revocations: number; feed: number },
  ): boolean {
    const granted = reply[3] ?? 0;
    if (granted < 1) return false;
    const userId = input.identity!.sub;
    const now = Date.now();
    if (
      !this.feedLive ||
      this.feedGeneration !== sent.feed ||
      (this.userRevocations.get(userId)?.revocations ?? 0) > sent.revocations ||
      // Older than the revocation messages kept (pruneUserRevocations): one could have been missed.
      now - sent.at >= REVOCATIONS_KEPT_MS
    ) {
      void this.giveBack(input.limits, granted - 1);
      return false;
    }
    let lease = this.leases.get(key);
    if (!lease) {
      lease = { userId, limits: input.limits, units: 0, size: 0, used: 0, expiresAt: 0, remaining: [], resetAt: [] };
      this.leases.set(key, lease);
      let keys = this.leasesByUser.get(userId);
      if (!keys) this.leasesByUser.set(userId, (keys = new Set()));
      keys.add(key);
    }
    lease.units += granted - 1;
    lease.size = granted;
    lease.used = 1;
    // From when the script was sent: the facts it read are no younger than that.
    lease.expiresAt = sent.at + this.leaseTtlMs;
    lease.remaining = verdict.limits.map((state) => state.remaining);
    // To the millisecond (the verdict has whole seconds): the lease's `t` counts down as time passes.
    lease.resetAt = input.limits.map((_, i) => now + (reply[5 + 2 * i] ?? 0));
    // What this caller may still do: what Redis has left, and what this instance holds for them.
    for (const state of verdict.limits) state.remaining += lease.units;
    return lease.units > 0;
  }

  /** Ends expired leases: what they hold goes back; leases idle for another lifetime are forgotten. */
  private sweep(now: number): void {
    for (const [key, lease] of this.leases) {
      if (lease.expiresAt > now || lease.pending) continue;
      if (lease.expiresAt + this.leaseTtlMs <= now || this.leases.size >= MEMORY_LIMIT) this.dropLease(key, lease);
      else if (lease.units > 0) {
        void this.giveBack(lease.limits, lease.units);
        lease.units = 0;
      }
    }
    this.pruneUserRevocations(now);
  }

  private giveBack(limits: Limit[], units: number): Promise<unknown> {
    if (units <= 0 || limits.length === 0 || this.redis.status !== 'ready') return Promise.resolve();
    return this.run(limitKeys(limits), scriptArgs(limits, 0, 0, 0, units)).catch((error: unknown) => {
      this.log.debug({ err: error }, 'could not give back the unused requests of a lease (they come back as the quota refills)');
    });
  }

  /** Whether a verified credential has been revoked (the revocation facts alone, no limit consumed). */
  async isRevoked(identity: Identity, iat: number | undefined): Promise<boolean> {
    return (await this.check({ limits: [], identity, ...(iat === undefined ? {} : { iat }) })).outcome === 'revoked';
  }

  private async run(keys: string[], args: Array<string | number>): Promise<number[]> {
    return Promise.race([this.send(keys, args), this.deadline()]);
  }

  private send(keys: string[], args: Array<string | number>): Promise<number[]> {
    this.stats.scripts += 1;
    return this.redis.evalsha(SCRIPT_SHA, keys.length, ...keys, ...args).catch((error: Error) => {
      if (!error.message.startsWith('NOSCRIPT')) throw error;
      return this.redis.eval(SCRIPT, keys.length, ...keys, ...args);
    }) as Promise<number[]>;
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
    const [code = 0, retryMs = 0, validAfterMs = 0] = reply;
    const identity = input.identity;
    if (identity && mode !== 0) this.learn(identity, code, validAfterMs / 1000);
    if (code === 2) return { outcome: 'revoked', reason: 'session', degraded: false };
    if (code === 3) return { outcome: 'revoked', reason: 'tokens_invalidated', degraded: false };
    if (code === 4) return { outcome: 'revoked', reason: 'user_disabled', degraded: false };
    if (code === 5) return { outcome: 'revoked', reason: 'api_key', degraded: false };
    const states: LimitState[] = input.limits.map((l, i) => ({
      policy: l.policy,
      remaining: Math.max(0, reply[4 + 2 * i] ?? 0),
      resetSeconds: Math.ceil((reply[5 + 2 * i] ?? 0) / 1000),
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
