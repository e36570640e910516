import type { FastifyBaseLogger } from 'fastify';
import type { Redis } from 'ioredis';

/**
 * What the gateway reads to refuse access tokens before they expire. This is a contract with the
 * gateway (see apps/auth/README.md); keys are written under the deployment's REDIS_KEY_PREFIX
 * (the ioredis keyPrefix), so they are named here without it:
 *
 * - `auth:revoked-session:<sid>` = '1', TTL access-token lifetime + 60 s: tokens with that `sid` fail.
 * - `auth:tokens-valid-after:<userId>` = unix seconds, same TTL: tokens of that user with `iat` < value fail.
 * - `auth:user-disabled:<userId>` = '1', no TTL, deleted when the user is enabled again.
 * - `auth:revoked-api-key:<keyId>` = '1', TTL 24 h: requests with that key fail, even from a
 *   gateway's cached answer about it, and its open requests end at the gateway's next recheck.
 *
 * Each change is also PUBLISHed as JSON `{userId?, sid?, keyId?}` on the raw channel
 * `<REDIS_KEY_PREFIX>auth:revocations`, so gateways can close open streams at once.
 *
 * The database stays the source of truth (refresh fails for a revoked session whatever Redis
 * holds). When Redis does not answer, writes wait in a bounded in-process queue and are retried
 * every few seconds, with TTLs still counted from the moment of the revocation.
 */
export class RevocationNotifier {
  private readonly pending: PendingWrite[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private readonly channel: string;
  private readonly ttlSeconds: number;

  constructor(
    private readonly redis: Redis,
    private readonly log: FastifyBaseLogger,
    options: { keyPrefix: string; accessTokenTtlSeconds: number; retryIntervalMs?: number },
  ) {
    this.channel = `${options.keyPrefix}auth:revocations`;
    this.ttlSeconds = options.accessTokenTtlSeconds + 60;
    this.retryIntervalMs = options.retryIntervalMs ?? 2000;
  }

  private readonly retryIntervalMs: number;

  static readonly keys = {
    revokedSession: (sid: string) => `auth:revoked-session:${sid}`,
    tokensValidAfter: (userId: string) => `auth:tokens-valid-after:${userId}`,
    userDisabled: (userId: string) => `auth:user-disabled:${userId}`,
    revokedApiKey: (keyId: string) => `auth:revoked-api-key:${keyId}`,
  };

  /**
   * How long a revoked key's fact is kept: past the gateways' answer cache (seconds) by far, and
   * long enough for their rechecks to end what still runs with the key (SSE replies, WebSockets);
   * a request older than this was ended by the pub/sub message, or the recheck before.
   */
  static readonly API_KEY_FACT_TTL_SECONDS = 24 * 3600;

  /** Sessions ended: their access tokens must stop working. */
  sessionsRevoked(userId: string, sessionIds: string[], at = new Date()): Promise<void> {
    return this.write({ kind: 'sessions', userId, sessionIds, at: at.getTime() });
  }

  /** Every access token of the user issued before `at` must stop working (logout-all, password or MFA change, role change). */
  tokensInvalidated(userId: string, at = new Date()): Promise<void> {
    return this.write({ kind: 'valid-after', userId, at: at.getTime() });
  }

  userDisabled(userId: string, at = new Date()): Promise<void> {
    return this.write({ kind: 'disabled', userId, at: at.getTime() });
  }

  userEnabled(userId: string, at = new Date()): Promise<void> {
    return this.write({ kind: 'enabled', userId, at: at.getTime() });
  }

  /** The key must stop working at every gateway: cached answers about it included, and requests still open with it. */
  apiKeyRevoked(userId: string, keyId: string, at = new Date()): Promise<void> {
    return this.write({ kind: 'api-key', userId, keyId, at: at.getTime() });
  }

  /** Writes still waiting for Redis. */
  get backlog(): number {
    return this.pending.length;
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.flushing;
  }

  private async write(item: PendingWrite): Promise<void> {
    if (this.pending.length === 0) {
      try {
        await this.apply(item);
        return;
      } catch (error) {
        this.log.error({ err: error, userId: item.userId }, 'redis unavailable: revocation queued for retry');
      }
    }
    if (this.pending.length >= 10_000) this.pending.shift();
    this.pending.push(item);
    this.schedule();
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flushing = this.flush().finally(() => (this.flushing = undefined));
    }, this.retryIntervalMs);
    this.timer.unref();
  }

  private async flush(): Promise<void> {
    while (this.pending.length > 0) {
      try {
        await this.apply(this.pending[0]!);
        this.pending.shift();
      } catch {
        this.schedule();
        return;
      }
    }
    this.log.info('revocations written to redis after an outage');
  }

  private async apply(item: PendingWrite): Promise<void> {
    const left = this.ttlSeconds - Math.floor((Date.now() - item.at) / 1000);
    const multi = this.redis.multi();
    const messages: string[] = [];
    switch (item.kind) {
      case 'sessions':
        if (left <= 0) return;
        for (const sid of item.sessionIds) {
          multi.set(RevocationNotifier.keys.revokedSession(sid), '1', 'EX', left);
          messages.push(JSON.stringify({ userId: item.userId, sid }));
        }
        break;
      case 'valid-after':
      case 'disabled': {
        if (left > 0) {
          // Never move the boundary back: a late retry must not re-validate newer revocations.
          multi.eval(
            "local cur = tonumber(redis.call('GET', KEYS[1]) or '0') if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end return 1",
            1,
            RevocationNotifier.keys.tokensValidAfter(item.userId),
            (item.at / 1000).toFixed(3), // seconds to the millisecond, as access tokens' iat
            String(left),
          );
        }
        if (item.kind === 'disabled') multi.set(RevocationNotifier.keys.userDisabled(item.userId), '1');
        messages.push(JSON.stringify({ userId: item.userId }));
        break;
      }
      case 'enabled':
        multi.del(RevocationNotifier.keys.userDisabled(item.userId));
        break;
      case 'api-key': {
        const left = RevocationNotifier.API_KEY_FACT_TTL_SECONDS - Math.floor((Date.now() - item.at) / 1000);
        if (left > 0) multi.set(RevocationNotifier.keys.revokedApiKey(item.keyId), '1', 'EX', left);
        messages.push(JSON.stringify({ userId: item.userId, keyId: item.keyId }));
        break;
      }
    }
    for (const message of messages) multi.publish(this.channel, message);
    const results = await multi.exec();
    const failed = results?.find(([error]) => error);
    if (!results || failed) throw failed?.[0] ?? new Error('redis transaction aborted');
  }
}

type PendingWrite =
  | { kind: 'sessions'; userId: string; sessionIds: string[]; at: number }
  | { kind: 'api-key'; userId: string; keyId: string; at: number }
  | { kind: 'valid-after' | 'disabled' | 'enabled'; userId: string; at: number };
