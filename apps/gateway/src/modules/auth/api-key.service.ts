import { createHash } from 'node:crypto';
import { request as undiciRequest, type Dispatcher } from 'undici';
import type { FastifyBaseLogger } from 'fastify';
import { HttpProblem, problems, signInternalCall, type Identity } from '@vivier/service-kit';

export interface ApiKeyOptions {
  authUrl: string;
  dispatcher: Dispatcher;
  secret: string;
  /** How long auth's answer (valid or not) is reused; a revoked key stops working within it. */
  ttlMs: number;
  log: FastifyBaseLogger;
  cacheSize?: number;
}

interface Answer {
  identity: Identity | undefined;
  until: number;
}

const API_KEY = /^vk_[A-Za-z0-9_-]{16,256}$/;

export function looksLikeApiKey(credential: string): boolean {
  return credential.startsWith('vk_');
}

/**
 * API keys are checked by auth (it holds their hashes); the answer is reused for a few seconds so
 * a client streaming requests does not cost auth one call each, while a revoked key stops
 * working within `ttlMs`. Keys are remembered by their SHA-256, never as given. Concurrent
 * requests with the same unknown key share one call to auth.
 */
export class ApiKeyVerifier {
  private readonly answers = new Map<string, Answer>();
  private readonly inflight = new Map<string, Promise<Identity | undefined>>();
  private readonly cacheSize: number;
  private readonly url: string;

  constructor(private readonly options: ApiKeyOptions) {
    this.cacheSize = options.cacheSize ?? 10_000;
    this.url = `${options.authUrl}/internal/v1/api-keys/verify`;
  }

  /**
   * The identity of the key's owner, or undefined for a key auth does not accept.
   * `beforeRemoteCall` runs only when auth has to be asked about a key not known to be valid (the
   * anonymous per-IP limit, so guessing keys costs the guesser, not auth): the recheck of a key
   * auth accepted before costs its users nothing, or ten busy keys behind one office address
   * would use up that address's allowance for sign-ins.
   */
  async verify(
    key: string,
    beforeRemoteCall?: () => Promise<void>,
    origin?: { ip: string; userAgent: string | undefined },
  ): Promise<Identity | undefined> {
    if (!API_KEY.test(key)) return undefined;
    const digest = createHash('sha256').update(key).digest('base64url');
    for (let tries = 0; ; tries++) {
      const cached = this.answers.get(digest);
      if (cached && cached.until > Date.now()) return cached.identity;
      const joined = this.inflight.get(digest);
      if (joined) {
        try {
          return await joined;
        } catch (error) {
          // The asker's own address was over its limit: that says nothing of this caller's, who
          // asks (and is charged) in turn. Anything else (auth away) is everyone's answer.
          if (!(error instanceof HttpProblem && error.status === 429) || tries >= 3) throw error;
          continue;
        }
      }
      const charge = cached?.identity === undefined ? beforeRemoteCall : undefined;
      // Shared from before the first await: requests arriving during the limit check join it.
      const asking: Promise<Identity | undefined> = (charge ? charge().then(() => this.ask(key, digest, origin)) : this.ask(key, digest, origin)).finally(() => {
        if (this.inflight.get(digest) === asking) this.inflight.delete(digest);
      });
      this.inflight.set(digest, asking);
      return asking;
    }
  }

  /** `origin`: the client's address and user agent, which auth records when it refuses the key. */
  private async ask(
    key: string,
    digest: string,
    origin: { ip: string; userAgent: string | undefined } | undefined,
  ): Promise<Identity | undefined> {
    let identity: Identity | undefined;
    try {
      const res = await undiciRequest(this.url, {
        method: 'POST',
        dispatcher: this.options.dispatcher,
        headers: { 'content-type': 'application/json', ...signInternalCall(this.options.secret) },
        body: JSON.stringify({
          key,
          ...(origin?.ip ? { ip: origin.ip.slice(0, 64) } : {}),
          ...(origin?.userAgent ? { userAgent: origin.userAgent.slice(0, 512) } : {}),
        }),
        headersTimeout: 3000,
        bodyTimeout: 3000,
      });
      if (res.statusCode === 200) {
        const body = (await res.body.json()) as { userId?: unknown; keyId?: unknown; role?: unknown };
        if (
          typeof body.userId !== 'string' ||
          typeof body.keyId !== 'string' ||
          (body.role !== 'user' && body.role !== 'admin')
        ) {
          throw new Error('malformed answer from the API key check');
        }
        identity = { sub: body.userId, role: body.role, keyId: body.keyId, kind: 'api_key' };
      } else if (res.statusCode === 401 || res.statusCode === 404) {
        await res.body.dump();
      } else {
        await res.body.dump();
        throw new Error(`the API key check answered ${res.statusCode}`);
      }
    } catch (error) {
      this.options.log.warn({ err: error }, 'API key check at auth failed');
      throw problems.unavailable('auth_unavailable', 'API keys cannot be checked right now; retry shortly.');
    }
    if (this.options.ttlMs > 0) {
      if (this.answers.size >= this.cacheSize) this.prune();
      this.answers.set(digest, { identity, until: Date.now() + this.options.ttlMs });
    }
    return identity;
  }

  /** Drops cached answers about a revoked key, or about every key of a user. */
  forget(revoked: { userId?: string; keyId?: string }): void {
    if (!revoked.userId && !revoked.keyId) return;
    for (const [digest, answer] of this.answers) {
      const identity = answer.identity;
      if (!identity) continue;
      if (revoked.keyId ? identity.keyId === revoked.keyId : identity.sub === revoked.userId)
        this.answers.delete(digest);
    }
  }

  private prune(): void {
    const now = Date.now();
    for (const [digest, answer] of this.answers) if (answer.until <= now) this.answers.delete(digest);
    if (this.answers.size >= this.cacheSize) {
      const oldest = this.answers.keys().next().value;
      if (oldest !== undefined) this.answers.delete(oldest);
    }
  }
}
