import { createPrivateKey, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint } from 'jose';
import type { FastifyBaseLogger } from 'fastify';
import type { AuthDatabase, AuthTransaction } from '../../database';
import type { SecretBox } from '../../security/secret-box';
import { signingKeysRepository, type SigningKeyRow, type SigningKeysRepository } from './tokens.repository';

export const ACCESS_TOKEN_ALG = 'EdDSA';
export const ACCESS_TOKEN_TYP = 'at+jwt';

/** How long an instance may sign with a key after another instance retired it (its cache age). */
const KEY_CACHE_MS = 30_000;

export interface PublicJwk {
  kty: string;
  crv: string;
  x: string;
  kid: string;
  alg: string;
  use: 'sig';
}

interface ActiveKey {
  kid: string;
  privateKey: KeyObject;
  createdAt: Date;
}

export interface SigningKeyRingOptions {
  accessTokenTtlSeconds: number;
  /** 0: no automatic rotation. */
  rotationDays: number;
  /** How long a key of the automatic rotation is published before it signs (gateways fetch it meanwhile). */
  publishAheadSeconds: number;
  log: FastifyBaseLogger;
}

/**
 * The Ed25519 keys that sign access tokens, kept in auth.signing_keys with the private half
 * sealed under AUTH_KEY_ENCRYPTION_KEY, so every instance signs with the same key and a restart
 * logs nobody out.
 *
 * Rotation on demand (the internal route, the `rotate-keys` script) adds a key that signs from
 * then on and retires the others: after a suspected leak, at once. The automatic rotation, once the
 * active key is older than JWT_KEY_ROTATION_DAYS, publishes the next key in the JWKS
 * JWT_KEY_PUBLISH_AHEAD_SECONDS before it signs (the current key retiring then), so that every
 * gateway has fetched it before its first token: a gateway refetches the JWKS for an unknown `kid`
 * only once per cooldown, and tokens with made-up kids could spend that cooldown just when the new
 * key appeared. A retired key stays in the JWKS for one access-token lifetime plus this cache's age
 * and a minute of clock skew: until every token it signed has expired.
 */
export class SigningKeyRing {
  private readonly keys: SigningKeysRepository;
  private cached: { key: ActiveKey; loadedAt: number } | undefined;
  private loading: Promise<ActiveKey> | undefined;

  constructor(
    private readonly db: AuthDatabase,
    private readonly box: SecretBox,
    private readonly options: SigningKeyRingOptions,
  ) {
    this.keys = signingKeysRepository(db);
  }

  /** How long after its retirement a key is still published. */
  get retentionMs(): number {
    return (this.options.accessTokenTtlSeconds + 60) * 1000 + KEY_CACHE_MS;
  }

  /** The key to sign with now (created on first use, rotated when too old). */
  async activeKey(): Promise<ActiveKey> {
    if (this.cached && Date.now() - this.cached.loadedAt < KEY_CACHE_MS) return this.cached.key;
    this.loading ??= this.load().finally(() => (this.loading = undefined));
    return this.loading;
  }

  /** Public keys able to verify tokens that may still be alive, newest first. */
  async jwks(): Promise<{ keys: PublicJwk[] }> {
    const rows = await this.keys.listVerifiable(new Date(Date.now() - this.retentionMs));
    return { keys: rows.map((row) => ({ ...(row.publicJwk as { kty: string; crv: string; x: string }), kid: row.kid, alg: row.alg, use: 'sig' as const })) };
  }

  /** Adds a new signing key and retires the current one. */
  async rotate(): Promise<{ kid: string; createdAt: Date }> {
    const created = await this.db.transaction(async (tx) => {
      await this.keys.lock(tx);
      return this.create(tx);
    });
    this.cached = undefined;
    this.options.log.info({ kid: created.kid }, 'signing key rotated');
    return created;
  }

  private async load(): Promise<ActiveKey> {
    let row = await this.keys.active();
    const maxAgeMs = this.options.rotationDays * 86_400_000;
    const tooOld = (r: SigningKeyRow) => maxAgeMs > 0 && Date.now() - r.createdAt.getTime() > maxAgeMs;
    if (!row) {
      row = await this.db.transaction(async (tx) => {
        await this.keys.lock(tx);
        // Another instance may have done it while this one waited for the lock.
        const current = await this.keys.active(tx);
        if (current) return current;
        const created = await this.create(tx);
        this.options.log.info({ kid: created.kid, reason: 'first key' }, 'signing key created');
        return (await this.keys.byKid(created.kid, tx))!;
      });
    } else if (tooOld(row) && !(await this.keys.pending())) {
      await this.db.transaction(async (tx) => {
        await this.keys.lock(tx);
        if (await this.keys.pending(tx)) return;
        const activatesAt = new Date(Date.now() + this.options.publishAheadSeconds * 1000);
        const created = await this.create(tx, activatesAt);
        this.options.log.info({ kid: created.kid, reason: 'age', activatesAt }, 'signing key created; published now, signing from its activation');
      });
    }
    const key: ActiveKey = {
      kid: row.kid,
      createdAt: row.createdAt,
      privateKey: createPrivateKey({ key: this.box.open(row.privateKeyEncrypted, `signing-key:${row.kid}`), format: 'der', type: 'pkcs8' }),
    };
    this.cached = { key, loadedAt: Date.now() };
    return key;
  }

  /** A new key, signing from `activatesAt` (now by default); the others retire then. */
  private async create(tx: AuthTransaction, activatesAt?: Date): Promise<{ kid: string; createdAt: Date }> {
    const { publicKey, privateKey } = generateKeyPairSync('ed25519');
    const jwk = publicKey.export({ format: 'jwk' }) as { kty: string; crv: string; x: string };
    const publicJwk = { kty: jwk.kty, crv: jwk.crv, x: jwk.x };
    const kid = await calculateJwkThumbprint(publicJwk, 'sha256');
    const createdAt = new Date();
    const der = privateKey.export({ format: 'der', type: 'pkcs8' });
    const from = activatesAt ?? createdAt;
    await this.keys.insert({ kid, alg: ACCESS_TOKEN_ALG, publicJwk, privateKeyEncrypted: this.box.seal(der, `signing-key:${kid}`), createdAt, activatesAt: from }, tx);
    await this.keys.retireOthers(kid, from, new Date(createdAt.getTime() - 2 * this.retentionMs), tx);
    return { kid, createdAt };
  }
}

export interface AccessTokenClaims {
  userId: string;
  sessionId: string;
  role: 'user' | 'admin';
}

/**
 * Access tokens: EdDSA JWTs, header `{alg, kid, typ: 'at+jwt'}` (RFC 9068), claims
 * `{iss, aud, sub, sid, role, iat, exp, jti}`.
 */
export class AccessTokenIssuer {
  constructor(
    private readonly ring: SigningKeyRing,
    private readonly options: { issuer: string; audience: string; ttlSeconds: number },
  ) {}

  get ttlSeconds(): number {
    return this.options.ttlSeconds;
  }

  /**
   * `issuedAt`: when what the token says (the role above all) was read, at the latest; `iat` is
   * that time to the millisecond (a NumericDate may have a fraction, RFC 7519 §2), so that a
   * token read before a change of the same second is older than the change's tokens-valid-after.
   */
  async issue(claims: AccessTokenClaims, issuedAt: Date = new Date()): Promise<{ accessToken: string; expiresIn: number }> {
    const key = await this.ring.activeKey();
    const iat = issuedAt.getTime() / 1000;
    const accessToken = await new SignJWT({ sid: claims.sessionId, role: claims.role })
      .setProtectedHeader({ alg: ACCESS_TOKEN_ALG, kid: key.kid, typ: ACCESS_TOKEN_TYP })
      .setIssuer(this.options.issuer)
      .setAudience(this.options.audience)
      .setSubject(claims.userId)
      .setIssuedAt(iat)
      .setExpirationTime(iat + this.options.ttlSeconds)
      .setJti(randomUUID())
      .sign(key.privateKey);
    return { accessToken, expiresIn: this.options.ttlSeconds };
  }
}
