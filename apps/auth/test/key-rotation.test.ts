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

  it('rotates automatically once the active key is older than JWT_KEY_ROTATION_DAYS, publishing the next key before it signs', async () => {
    const { accessToken } = await auth.register();
    const kid = decodeProtectedHeader(accessToken).kid!;
    await auth.pg.query("update auth.signing_keys set created_at = now() - interval '40 days' where kid = $1", [kid]);
    const before = new Set((await jwks()).keys.map((k) => k.kid));
    const fresh = await startAuth({ JWT_KEY_ROTATION_DAYS: '30', JWT_KEY_PUBLISH_AHEAD_SECONDS: '900' });
    let later: AuthHarness | undefined;
    try {
      // The next key is in the JWKS at once, but the old one still signs: no gateway has seen it yet.
      const meanwhile = await fresh.register();
      expect(decodeProtectedHeader(meanwhile.accessToken).kid).toBe(kid);
      const set = (await fresh.call('GET', '/.well-known/jwks.json')).json<JSONWebKeySet>();
      const newKid = set.keys.map((k) => k.kid!).find((k) => k !== kid && !before.has(k))!;
      expect(newKid).toBeDefined();
      const { rows } = await auth.pg.query<{ ahead: number }>(
        'select extract(epoch from activates_at - now())::int as ahead from auth.signing_keys where kid = $1',
        [newKid],
      );
      expect(rows[0]!.ahead).toBeGreaterThan(850);
      expect(rows[0]!.ahead).toBeLessThanOrEqual(900);

      // Its time has come (as if 15 minutes had passed): it signs, and the old key verifies on.
      await auth.pg.query("update auth.signing_keys set activates_at = now() - interval '1 second' where kid = $1", [newKid]);
      await auth.pg.query("update auth.signing_keys set retired_at = now() - interval '1 second' where kid = $1", [kid]);
      later = await startAuth({ JWT_KEY_ROTATION_DAYS: '30' });
      const next = await later.register();
      expect(decodeProtectedHeader(next.accessToken).kid).toBe(newKid);
      const after = (await later.call('GET', '/.well-known/jwks.json')).json<JSONWebKeySet>();
      expect(after.keys.map((k) => k.kid)).toEqual(expect.arrayContaining([kid, newKid]));
    } finally {
      await fresh.close();
      await later?.close();
    }
  });

  it('refuses a rotation request that is not a signed internal call', async () => {
    const res = await auth.call('POST', '/internal/v1/signing-keys/rotate');
    expect(res.statusCode).toBe(403);
  });
});
