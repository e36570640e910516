import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import { subscribeChannel, type Identity } from '@vivier/service-kit';

/** What auth publishes on `<REDIS_KEY_PREFIX>auth:revocations` (apps/auth revocation.service.ts). */
export interface RevocationMessage {
  userId?: string;
  sid?: string;
  keyId?: string;
}

/** Credentials checked at once by a recheck. */
const RECHECK_BATCH = 100;

interface Open {
  identity: Identity;
  /** `iat` of the access token (unix seconds); undefined for API keys. */
  iat: number | undefined;
  close: () => void;
}

/**
 * The requests in flight per user, so a revocation can end them: an SSE reply or a long upload
 * started with a token that is now revoked stops at once instead of running on for minutes.
 */
export class OpenRequests {
  private readonly byUser = new Map<string, Set<Open>>();

  /** Registers a request; the returned function removes it (call it when the response closes). */
  add(identity: Identity, iat: number | undefined, close: () => void): () => void {
    const entry: Open = { identity, iat, close };
    let set = this.byUser.get(identity.sub);
    if (!set) this.byUser.set(identity.sub, (set = new Set()));
    set.add(entry);
    return () => {
      set.delete(entry);
      if (set.size === 0 && this.byUser.get(identity.sub) === set) this.byUser.delete(identity.sub);
    };
  }

  /** Closes the requests a revocation concerns; returns how many. */
  /** `nowSeconds` to the millisecond, as tokens' `iat` (a token read earlier in the same second is concerned). */
  closeFor(message: RevocationMessage, nowSeconds = Date.now() / 1000): number {
    if (!message.userId) return 0;
    const set = this.byUser.get(message.userId);
    if (!set) return 0;
    let closed = 0;
    for (const entry of [...set]) {
      const { sid, keyId } = entry.identity;
      // A session revoked: its tokens; a key revoked: that key; otherwise (logout-all, disabled,
      // role change) every credential of the user issued until now — not a token from a sign-in
      // made after the message.
      const concerned = message.sid
        ? sid === message.sid
        : message.keyId
          ? keyId === message.keyId
          : entry.iat === undefined || entry.iat <= nowSeconds;
      if (concerned) {
        entry.close();
        closed += 1;
      }
    }
    return closed;
  }

  /**
   * Asks `revoked` about every open request (one question per credential), and closes those it
   * says are revoked: what ends an open request when the pub/sub message was missed (the
   * subscriber was reconnecting, or the gateway was cut off from Redis when auth published).
   * Returns how many were closed.
   */
  async recheck(revoked: (identity: Identity, iat: number | undefined) => Promise<boolean>): Promise<number> {
    const byCredential = new Map<string, Open[]>();
    for (const set of this.byUser.values()) {
      for (const entry of set) {
        const key = `${entry.identity.sub} ${entry.identity.sid ?? ''} ${entry.identity.keyId ?? ''} ${entry.iat ?? ''}`;
        const list = byCredential.get(key);
        if (list) list.push(entry);
        else byCredential.set(key, [entry]);
      }
    }
    let closed = 0;
    // In batches: thousands of open sockets must not crowd out the checks of live requests.
    const credentials = [...byCredential.values()];
    for (let i = 0; i < credentials.length; i += RECHECK_BATCH) {
      await Promise.all(
        credentials.slice(i, i + RECHECK_BATCH).map(async (entries) => {
          const first = entries[0]!;
          if (!(await revoked(first.identity, first.iat))) return;
          for (const entry of entries) {
            entry.close();
            closed += 1;
          }
        }),
      );
    }
    return closed;
  }

  get size(): number {
    let n = 0;
    for (const set of this.byUser.values()) n += set.size;
    return n;
  }
}

/**
 * Subscribes to auth's revocation channel. It ends what is already running (open streams of the
 * revoked session/user), drops cached API key answers of a revoked key, and ends the edge leases
 * of the user (requests let through without asking Redis, edge-check.service.ts), which are only
 * taken while this subscription is live. The subscription follows the
 * connection: made once Redis is ready, renewed by ioredis after reconnects.
 */
export function listenForRevocations(options: {
  redis: Redis;
  channel: string;
  log: FastifyBaseLogger;
  onMessage: (message: RevocationMessage) => void;
  /** The subscriber is connected again after a break: messages of the break were missed. */
  onReconnect?: () => void;
  /** Whether every revocation published from now on will arrive (false from the moment the subscriber is cut off). */
  onLive?: (live: boolean) => void;
}): { close: () => Promise<void> } {
  const subscription = subscribeChannel(options.redis, {
    channel: options.channel,
    // Named after its channel: an operator (or a test) can tell one gateway's subscriber in CLIENT LIST.
    name: `gateway-revocations@${options.channel}`,
    log: options.log,
    onMessage: (raw) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(raw);
      } catch {
        parsed = undefined;
      }
      if (parsed && typeof parsed === 'object') return options.onMessage(parsed as RevocationMessage);
      options.log.warn('unreadable revocation message');
      // Whatever it revoked is unknown: what rests on having heard every revocation (edge leases) ends.
      options.onMessage({});
    },
    ...(options.onReconnect ? { onReconnect: options.onReconnect } : {}),
    ...(options.onLive ? { onLive: options.onLive } : {}),
  });
  return { close: async () => subscription.close() };
}
