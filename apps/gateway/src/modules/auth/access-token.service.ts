import { decodeProtectedHeader, jwtVerify, type JWTPayload, type ProtectedHeaderParameters } from 'jose';
import { HttpProblem, problems, type Identity } from '@vivier/service-kit';
import { ALLOWED_ALGORITHMS, type JwksCache } from './jwks.service';

export interface VerifiedToken {
  identity: Identity;
  /** Unix seconds. */
  iat: number;
  exp: number;
  kid: string;
}

export interface AccessTokenOptions {
  issuer: string;
  audience: string;
  clockToleranceSeconds: number;
  /** Verified tokens remembered (by their exact string) so a token's signature is checked once. */
  cacheSize?: number;
}

/** Header parameters that point at keys elsewhere: auth never sets them, so a token carrying one is forged. */
const KEY_REFERENCE_HEADERS = ['jku', 'x5u', 'jwk', 'x5c'] as const;

export function invalidToken(detail: string): HttpProblem {
  return new HttpProblem(401, 'invalid_token', detail, {
    headers: {
      'www-authenticate': `Bearer error="invalid_token", error_description="${detail.replace(/"/g, "'")}"`,
    },
  });
}

function normalizedTyp(typ: string | undefined): string | undefined {
  if (typeof typ !== 'string') return undefined;
  const lower = typ.toLowerCase();
  return lower.startsWith('application/') ? lower.slice('application/'.length) : lower;
}

/**
 * Verifies access tokens issued by auth (RFC 8725 and RFC 9068 checks): the header is checked
 * before any key is looked up (algorithm allowlist, `typ: at+jwt`, no key references, a `kid`),
 * then the signature with the key from the JWKS, then `iss`, `aud`, `exp`, `iat` and the claims
 * Vivier relies on. Revocation is checked per request elsewhere (in Redis).
 *
 * A verified token is remembered until it expires, keyed by its exact string: checking an
 * Ed25519 signature costs a few hundred microseconds on small machines, a map lookup almost
 * nothing, and a client sends the same token for its whole 15-minute life.
 */
export class AccessTokenVerifier {
  private readonly cache = new Map<string, VerifiedToken>();
  private readonly cacheSize: number;

  constructor(
    private readonly jwks: JwksCache,
    private readonly options: AccessTokenOptions,
  ) {
    this.cacheSize = options.cacheSize ?? 10_000;
  }

  async verify(token: string): Promise<VerifiedToken> {
    const nowSeconds = Date.now() / 1000;
    const tolerance = this.options.clockToleranceSeconds;
    const cached = this.cache.get(token);
    if (cached) {
      // Still unexpired, and its key still published (a key withdrawn from the JWKS stops its tokens).
      if (cached.exp + tolerance > nowSeconds && this.jwks.has(cached.kid)) return cached;
      this.cache.delete(token);
    }

    let header: ProtectedHeaderParameters;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw invalidToken('The access token is malformed.');
    }
    if (typeof header.alg !== 'string' || !(ALLOWED_ALGORITHMS as readonly string[]).includes(header.alg)) {
      throw invalidToken('The access token uses an algorithm that is not accepted.');
    }
    if (normalizedTyp(header.typ) !== 'at+jwt') throw invalidToken('The token is not an access token.');
    for (const name of KEY_REFERENCE_HEADERS) {
      if (name in header)
        throw invalidToken('The access token references its own key, which is never accepted.');
    }
    if (typeof header.kid !== 'string' || header.kid === '')
      throw invalidToken('The access token has no key id.');

    const lookup = await this.jwks.lookup(header.kid);
    if (lookup.status === 'unavailable') {
      throw problems.unavailable(
        'auth_unavailable',
        'Access tokens cannot be verified right now; retry shortly.',
      );
    }
    if (lookup.status === 'unknown') throw invalidToken('The access token was signed with an unknown key.');
    if (lookup.entry.alg !== header.alg)
      throw invalidToken('The access token algorithm does not match its key.');

    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, lookup.entry.key, {
        algorithms: [lookup.entry.alg],
        issuer: this.options.issuer,
        audience: this.options.audience,
        typ: 'at+jwt',
        clockTolerance: tolerance,
        requiredClaims: ['sub', 'sid', 'role', 'iat', 'exp', 'jti'],
      }));
    } catch (error) {
      const code = (error as { code?: string }).code;
      throw invalidToken(
        code === 'ERR_JWT_EXPIRED' ? 'The access token has expired.' : 'The access token is invalid.',
      );
    }
    const { sub, sid, role, iat, exp } = payload as JWTPayload & { sid?: unknown; role?: unknown };
    if (typeof sub !== 'string' || typeof sid !== 'string' || (role !== 'user' && role !== 'admin')) {
      throw invalidToken('The access token claims are incomplete.');
    }
    if (typeof iat !== 'number' || typeof exp !== 'number' || iat > nowSeconds + tolerance) {
      throw invalidToken('The access token was issued in the future.');
    }

    const verified: VerifiedToken = {
      identity: { sub, role, sid, kind: 'access_token' },
      iat,
      exp,
      kid: header.kid,
    };
    if (this.cache.size >= this.cacheSize) {
      // Oldest first: Map iteration follows insertion order.
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.set(token, verified);
    return verified;
  }
}
