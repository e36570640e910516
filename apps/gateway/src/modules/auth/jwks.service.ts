import { importJWK, type CryptoKey, type JWK } from 'jose';
import { request as undiciRequest, type Dispatcher } from 'undici';
import type { FastifyBaseLogger } from 'fastify';

/** Signature algorithms an access token may use; anything else is refused before any key lookup. */
export const ALLOWED_ALGORITHMS = ['EdDSA', 'ES256'] as const;
export type AllowedAlgorithm = (typeof ALLOWED_ALGORITHMS)[number];

export interface VerificationKey {
  key: CryptoKey;
  alg: AllowedAlgorithm;
}

export type KeyLookup =
  { status: 'found'; entry: VerificationKey } | { status: 'unknown' } | { status: 'unavailable' };

export interface JwksOptions {
  url: string;
  dispatcher: Dispatcher;
  ttlSeconds: number;
  cooldownSeconds: number;
  log: FastifyBaseLogger;
}

/** The algorithm a JWK verifies, or undefined when it is not a signing key we accept. */
function algorithmOf(jwk: JWK): AllowedAlgorithm | undefined {
  if (jwk.use !== undefined && jwk.use !== 'sig') return undefined;
  if (
    jwk.kty === 'OKP' &&
    jwk.crv === 'Ed25519' &&
    (jwk.alg === undefined || jwk.alg === 'EdDSA' || jwk.alg === 'Ed25519')
  )
    return 'EdDSA';
  if (jwk.kty === 'EC' && jwk.crv === 'P-256' && (jwk.alg === undefined || jwk.alg === 'ES256'))
    return 'ES256';
  return undefined;
}

/**
 * The auth service's public keys, fetched from its JWKS at start-up and imported once. A `kid` we
 * do not know refetches the set, at most once per cooldown, so a flood of tokens with random kids
 * costs auth one request per cooldown (a key rotated in right after start-up is still picked up). The set is also refreshed in the background once it is older than
 * its TTL; while auth is away the last set keeps verifying.
 */
export class JwksCache {
  private keys = new Map<string, VerificationKey>();
  private loadedAt = 0;
  /** When a token with an unknown kid last caused a fetch (the start-up and TTL fetches do not count). */
  private lastUnknownKidFetchAt = Number.NEGATIVE_INFINITY;
  private inflight: Promise<void> | undefined;
  /** Requests made to the JWKS endpoint (for tests and logs). */
  fetches = 0;

  constructor(private readonly options: JwksOptions) {}

  /** True once a JWKS has been loaded and still lists `kid`. */
  has(kid: string): boolean {
    return this.keys.has(kid);
  }

  async lookup(kid: string): Promise<KeyLookup> {
    const entry = this.keys.get(kid);
    const now = Date.now();
    if (entry) {
      if (now - this.loadedAt > this.options.ttlSeconds * 1000) void this.refresh();
      return { status: 'found', entry };
    }
    if (this.inflight) await this.inflight;
    else if (now - this.lastUnknownKidFetchAt >= this.options.cooldownSeconds * 1000) {
      this.lastUnknownKidFetchAt = now;
      await this.refresh();
    }
    const found = this.keys.get(kid);
    if (found) return { status: 'found', entry: found };
    return this.loadedAt === 0 ? { status: 'unavailable' } : { status: 'unknown' };
  }

  /** Fetches the set now (one request at a time); failures keep the previous set. */
  refresh(): Promise<void> {
    this.inflight ??= this.load().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private async load(): Promise<void> {
    this.fetches += 1;
    try {
      const res = await undiciRequest(this.options.url, {
        dispatcher: this.options.dispatcher,
        headersTimeout: 3000,
        bodyTimeout: 3000,
      });
      if (res.statusCode !== 200) {
        await res.body.dump();
        throw new Error(`JWKS answered ${res.statusCode}`);
      }
      const body = (await res.body.json()) as { keys?: unknown };
      if (!Array.isArray(body.keys)) throw new Error('JWKS has no keys array');
      const next = new Map<string, VerificationKey>();
      for (const jwk of body.keys as JWK[]) {
        const alg = algorithmOf(jwk);
        if (!alg || typeof jwk.kid !== 'string' || jwk.kid === '') continue;
        // Keep the key object that is already imported: no per-refresh crypto work for known kids.
        const known = this.keys.get(jwk.kid);
        if (known && known.alg === alg) {
          next.set(jwk.kid, known);
          continue;
        }
        try {
          const key = (await importJWK({ ...jwk, alg }, alg)) as CryptoKey;
          next.set(jwk.kid, { key, alg });
        } catch (error) {
          this.options.log.warn({ err: error, kid: jwk.kid }, 'JWKS key could not be imported');
        }
      }
      this.keys = next;
      this.loadedAt = Date.now();
    } catch (error) {
      this.options.log.warn(
        { err: error, url: this.options.url },
        'JWKS fetch failed; keeping the previous keys',
      );
    }
  }
}
