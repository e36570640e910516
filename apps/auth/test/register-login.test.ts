import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORD, identityOf, startAuth, uniqueEmail, type AuthHarness, type SignedIn } from './helpers';

let auth: AuthHarness;
beforeAll(async () => {
  auth = await startAuth();
});
afterAll(async () => {
  await auth.close();
});

describe('register and login', () => {
  it('registers an account, signs in with it and reads it back with /me', async () => {
    const email = uniqueEmail('Ada');
    const res = await auth.call('POST', '/api/v1/auth/register', { body: { email: email.toUpperCase(), password: PASSWORD, name: 'Ada' } });
    expect(res.statusCode).toBe(201);
    const registered = res.json<SignedIn>();
    expect(registered.user).toMatchObject({ email: email.toLowerCase(), name: 'Ada', role: 'user', mfaEnabled: false });
    expect(registered.accessToken.split('.')).toHaveLength(3);
    expect(registered.refreshToken).toMatch(/^vrt_[A-Za-z0-9_-]{43}$/);
    expect(registered.expiresIn).toBe(900);

    expect(res.headers['cache-control']).toBe('no-store');
    const login = await auth.login(email);
    expect(login.headers['cache-control']).toBe('no-store');
    expect(login.statusCode).toBe(200);
    const signedIn = login.json<SignedIn>();
    expect(signedIn.user.id).toBe(registered.user.id);
    expect(identityOf(signedIn.accessToken).sid).not.toBe(identityOf(registered.accessToken).sid);

    const me = await auth.call('GET', '/api/v1/auth/me', { identity: identityOf(signedIn.accessToken) });
    expect(me.statusCode).toBe(200);
    expect(me.json()).toEqual({ id: registered.user.id, email: email.toLowerCase(), name: 'Ada', role: 'user', mfaEnabled: false, createdAt: registered.user.createdAt });

    // The stored hash is argon2id with at least the required parameters.
    const { rows } = await auth.pg.query<{ password_hash: string }>('select password_hash from auth.users where id = $1', [registered.user.id]);
    expect(rows[0]!.password_hash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
  });

  it('refuses an email that lower-casing makes too long with 400, at registration and sign-in (it was a 500)', async () => {
    // 254 characters as sent; "İ" lower-cases to two, so 503 once normalized.
    const email = `${'İ'.repeat(249)}@a.co`;
    expect(email).toHaveLength(254);
    const registered = await auth.call('POST', '/api/v1/auth/register', { body: { email, password: PASSWORD } });
    expect(registered.statusCode).toBe(400);
    expect(registered.json()).toMatchObject({ code: 'validation_failed' });
    const login = await auth.call('POST', '/api/v1/auth/login', { body: { email, password: PASSWORD } });
    expect(login.statusCode).toBe(400);
    expect(login.json()).toMatchObject({ code: 'validation_failed' });
  });

  it('answers 401 without a signed-in caller on /me', async () => {
    const res = await auth.call('GET', '/api/v1/auth/me');
    expect(res.statusCode).toBe(401);
    expect(res.headers['content-type']).toContain('application/problem+json');
  });
});
