import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAuth, type AuthHarness } from './helpers';

let auth: AuthHarness;
beforeAll(async () => {
  auth = await startAuth();
});
afterAll(async () => {
  await auth.close();
});

describe('access tokens', () => {
  it('are EdDSA JWTs with kid and typ at+jwt, the claims iss, aud, sub, sid, role, iat, exp (15 min), jti, and verify against the JWKS', async () => {
    const { user, accessToken } = await auth.register();
    const header = decodeProtectedHeader(accessToken);
    expect(header).toEqual({ alg: 'EdDSA', kid: expect.any(String), typ: 'at+jwt' });

    const jwks = await auth.call('GET', '/.well-known/jwks.json', { direct: true });
    expect(jwks.statusCode).toBe(200);
    expect(jwks.headers['cache-control']).toMatch(/max-age=\d+/);
    const set = jwks.json<JSONWebKeySet>();
    const key = set.keys.find((k) => k.kid === header.kid);
    expect(key).toMatchObject({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig' });
    expect(key).not.toHaveProperty('d');

    const { payload, protectedHeader } = await jwtVerify(accessToken, createLocalJWKSet(set), {
      issuer: 'vivier',
      audience: 'vivier-api',
      algorithms: ['EdDSA'],
      typ: 'at+jwt',
    });
    expect(protectedHeader.kid).toBe(header.kid);
    expect(payload).toEqual({
      iss: 'vivier',
      aud: 'vivier-api',
      sub: user.id,
      sid: expect.stringMatching(/^[0-9a-f-]{36}$/),
      role: 'user',
      iat: expect.any(Number),
      exp: expect.any(Number),
      jti: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
    expect(payload.exp! - payload.iat!).toBe(900);
    expect(Math.abs(payload.iat! - Date.now() / 1000)).toBeLessThan(10);
  });

  it('use the configured issuer and audience', async () => {
    const custom = await startAuth({ JWT_ISSUER: 'https://auth.example.test', JWT_AUDIENCE: 'example-api', ACCESS_TOKEN_TTL_SECONDS: '60' });
    try {
      const { accessToken, expiresIn } = await custom.register();
      expect(expiresIn).toBe(60);
      const set = (await custom.call('GET', '/.well-known/jwks.json')).json<JSONWebKeySet>();
      const { payload } = await jwtVerify(accessToken, createLocalJWKSet(set), { issuer: 'https://auth.example.test', audience: 'example-api' });
      expect(payload.exp! - payload.iat!).toBe(60);
    } finally {
      await custom.close();
    }
  });

  it('keep their private key encrypted at rest', async () => {
    const { rows } = await auth.pg.query<{ kid: string; private_key_encrypted: string; public_jwk: Record<string, string> }>('select kid, private_key_encrypted, public_jwk from auth.signing_keys');
    expect(rows.length).toBeGreaterThan(0);
    for (const row of rows) {
      expect(row.private_key_encrypted).toMatch(/^v1\.[0-9a-f]{8}\./);
      expect(row.private_key_encrypted).not.toContain('PRIVATE KEY');
      expect(row.public_jwk).not.toHaveProperty('d');
    }
  });
});
