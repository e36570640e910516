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

const jwks = async () => (await auth.call('GET', '/.well-known/jwks.json')).json<JSONWebKeySet>();

describe('signing key rotation', () => {
  it('signs new tokens with the new key while tokens of the old key still verify through the JWKS', async () => {
    const before = await auth.register();
    const oldKid = decodeProtectedHeader(before.accessToken).kid!;

    const rotated = await auth.internal('POST', '/internal/v1/signing-keys/rotate');
    expect(rotated.statusCode).toBe(201);
    const newKid = rotated.json<{ kid: string }>().kid;
    expect(newKid).not.toBe(oldKid);

    const after = await auth.login(before.user.email);
    expect(decodeProtectedHeader(after.json<{ accessToken: string }>().accessToken).kid).toBe(newKid);

    const set = await jwks();
    expect(set.keys.map((k) => k.kid)).toEqual(expect.arrayContaining([oldKid, newKid]));
    await expect(jwtVerify(before.accessToken, createLocalJWKSet(set), { issuer: 'vivier', audience: 'vivier-api' })).resolves.toBeDefined();
    await expect(jwtVerify(after.json<{ accessToken: string }>().accessToken, createLocalJWKSet(set), { issuer: 'vivier', audience: 'vivier-api' })).resolves.toBeDefined();
    // The refresh token of the old login keeps working: nobody was logged out.
    expect((await auth.call('POST', '/api/v1/auth/refresh', { body: { refreshToken: before.refreshToken } })).statusCode).toBe(200);
  });

  it('drops a retired key from the JWKS once every token it signed has expired', async () => {
    const rotated = await auth.internal('POST', '/internal/v1/signing-keys/rotate');
    const kid = rotated.json<{ kid: string }>().kid;
    await auth.internal('POST', '/internal/v1/signing-keys/rotate');
    expect((await jwks()).keys.map((k) => k.kid)).toContain(kid);
    // Retired long enough ago (more than an access-token lifetime plus margins).
    await auth.pg.query("update auth.signing_keys set retired_at = now() - interval '1 hour' where kid = $1", [kid]);
    expect((await jwks()).keys.map((k) => k.kid)).not.toContain(kid);
  });

  it('rotates automatically once the active key is older than JWT_KEY_ROTATION_DAYS', async () => {
    const { accessToken } = await auth.register();
    const kid = decodeProtectedHeader(accessToken).kid!;
    await auth.pg.query("update auth.signing_keys set created_at = now() - interval '40 days' where kid = $1", [kid]);
    const fresh = await startAuth({ JWT_KEY_ROTATION_DAYS: '30' });
    try {
      const next = await fresh.register();
      const newKid = decodeProtectedHeader(next.accessToken).kid!;
      expect(newKid).not.toBe(kid);
      const set = (await fresh.call('GET', '/.well-known/jwks.json')).json<JSONWebKeySet>();
      expect(set.keys.map((k) => k.kid)).toEqual(expect.arrayContaining([kid, newKid]));
    } finally {
      await fresh.close();
    }
  });

  it('refuses a rotation request that is not a signed internal call', async () => {
    const res = await auth.call('POST', '/internal/v1/signing-keys/rotate');
    expect(res.statusCode).toBe(403);
  });
});
