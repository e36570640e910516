import { createHash } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { Redis } from 'ioredis';

/** One counter to take: its key (without prefix) and its rule. */
export interface CounterRule {
  key: string;
  limit: number;
  windowSeconds: number;
}

export interface CounterState {
  key: string;
  count: number;
  /** Milliseconds until the window ends. */
  resetInMs: number;
  exceeded: boolean;
}

// INCR every key; the first hit of a window starts its expiry. Returns count and PTTL per key.
const TAKE_SCRIPT = `
local out = {}
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    redis.call('PEXPIRE', key, ARGV[i])
    ttl = tonumber(ARGV[i])
  end
  out[#out + 1] = count
  out[#out + 1] = ttl
end
return out`;

const RELEASE_SCRIPT = `
for i, key in ipairs(KEYS) do
  if ARGV[i] == 'reset' then
    redis.call('DEL', key)
  elseif redis.call('EXISTS', key) == 1 then
    local left = redis.call('DECR', key)
    if left <= 0 then redis.call('DEL', key) end
  end
end
return 1`;

const LOCAL_MAX_KEYS = 50_000;

/**
 * Fixed-window attempt counters in Redis, shared by every auth instance (keys `auth:throttle:…`).
 *
 * Attempts are counted before the work is done (so parallel guesses cannot slip past the limit)
 * and handed back when the attempt turns out legitimate (`release`).
 *
 * When Redis does not answer, the same counters live in this process instead (bounded, oldest
 * evicted first): limits then hold per instance rather than per deployment, and sign-in keeps
 * working. See apps/auth/README.md.
 */
export class AttemptLimiter {
  private readonly local = new Map<string, { count: number; resetAt: number }>();
  private lastWarning = 0;

  constructor(
    private readonly redis: Redis,
    private readonly log: FastifyBaseLogger,
  ) {
    if (!('authThrottleTake' in redis)) {
      redis.defineCommand('authThrottleTake', { lua: TAKE_SCRIPT });
      redis.defineCommand('authThrottleRelease', { lua: RELEASE_SCRIPT });
    }
  }

  /** Counts one attempt against every rule; `exceeded` when an attempt is over its limit. */
  async take(rules: CounterRule[]): Promise<CounterState[]> {
    const keys = rules.map((r) => `auth:throttle:${r.key}`);
    try {
      const raw = (await (this.redis as unknown as RedisWithScripts).authThrottleTake(
        keys.length,
        ...keys,
        ...rules.map((r) => String(r.windowSeconds * 1000)),
      )) as number[];
      return rules.map((rule, i) => {
        const count = Number(raw[i * 2]);
        return { key: rule.key, count, resetInMs: Number(raw[i * 2 + 1]), exceeded: count > rule.limit };
      });
    } catch (error) {
      this.warn(error);
      return rules.map((rule, i) => this.takeLocal(keys[i]!, rule));
    }
  }

  /** Hands attempts back: `reset` clears a counter, otherwise one attempt is returned. */
  async release(entries: Array<{ key: string; reset?: boolean }>): Promise<void> {
    if (entries.length === 0) return;
    const keys = entries.map((e) => `auth:throttle:${e.key}`);
    for (const [i, entry] of entries.entries()) {
      const local = this.local.get(keys[i]!);
      if (!local) continue;
      if (entry.reset || local.count <= 1) this.local.delete(keys[i]!);
      else local.count -= 1;
    }
    try {
      await (this.redis as unknown as RedisWithScripts).authThrottleRelease(keys.length, ...keys, ...entries.map((e) => (e.reset ? 'reset' : 'one')));
    } catch (error) {
      this.warn(error);
    }
  }

  private takeLocal(key: string, rule: CounterRule): CounterState {
    const now = Date.now();
    let entry = this.local.get(key);
    if (!entry || entry.resetAt <= now) {
      this.local.delete(key);
      entry = { count: 0, resetAt: now + rule.windowSeconds * 1000 };
      if (this.local.size >= LOCAL_MAX_KEYS) {
        const oldest = this.local.keys().next().value;
        if (oldest !== undefined) this.local.delete(oldest);
      }
      this.local.set(key, entry);
    }
    entry.count += 1;
    return { key: rule.key, count: entry.count, resetInMs: entry.resetAt - now, exceeded: entry.count > rule.limit };
  }

  private warn(error: unknown): void {
    const now = Date.now();
    if (now - this.lastWarning < 10_000) return;
    this.lastWarning = now;
    this.log.warn({ err: error }, 'redis unavailable: throttling with in-process counters');
  }
}

interface RedisWithScripts {
  authThrottleTake(numKeys: number, ...args: string[]): Promise<unknown>;
  authThrottleRelease(numKeys: number, ...args: string[]): Promise<unknown>;
}

/** A counter key for an identifier that must not appear in Redis in clear (an email). */
export function hashedKey(kind: string, value: string): string {
  return `${kind}:${createHash('sha256').update(value).digest('base64url').slice(0, 32)}`;
}

/**
 * The counter of a signed-in user's re-verifications (the current password to change it, a code to
 * turn MFA on or off), apart from the sign-in counter of their email: failed sign-ins by anyone who
 * knows the address must not lock the account's owner out of securing it, and a session thief's
 * guesses must not lock them out of signing in.
 */
export function reverifyKey(userId: string): string {
  return `reverify:user:${userId}`;
}
