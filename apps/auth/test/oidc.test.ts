import { createHash, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { base32Decode, hotp } from '../src/modules/mfa/totp.service';
import { hashedKey } from '../src/modules/throttling/throttling.service';
import { PASSWORD, freshStep, identityOf, outboxEvents, startAuth, testRedis, uniqueEmail, type AuthHarness, type SignedIn } from './helpers';
import { startIdentityProvider, type TestAccount, type TestIdentityProvider } from './identity-provider';

const PUBLIC_BASE_URL = 'http://vivier.test';
const CALLBACK = `${PUBLIC_BASE_URL}/api/v1/auth/oauth/test/callback`;

let idp: TestIdentityProvider;
let auth: AuthHarness;
let adminEmail: string;

beforeAll(async () => {
  idp = await startIdentityProvider(CALLBACK);
  adminEmail = uniqueEmail('boss');
  auth = await startAuth({
    PUBLIC_BASE_URL,
    ADMIN_EMAILS: `someone@example.test, ${adminEmail.toUpperCase()}`,
    OIDC_PROVIDERS: JSON.stringify([
      { name: 'test', issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret },
      // A provider nobody answers for (an outage, a wrong issuer).
      { name: 'down', issuer: 'http://127.0.0.1:9', clientId: 'c', clientSecret: 's' },
    ]),
  });
});
afterAll(async () => {
  await auth?.close();
  await idp?.stop();
});

function account(overrides: Partial<TestAccount> = {}): TestAccount {
  return { sub: randomUUID(), email: uniqueEmail('oidc'), email_verified: true, name: 'Grace Hopper', ...overrides };
}

/** /start, then the provider's login and consent as a browser would; returns the callback URL and the state cookie. */
async function startAndAuthorize(who: TestAccount): Promise<{ callback: URL; cookie: string; authorization: URL }> {
  idp.signInAs(who);
  const start = await auth.call('GET', '/api/v1/auth/oauth/test/start');
  expect(start.statusCode).toBe(302);
  const authorization = new URL(start.headers.location as string);
  const setCookie = String(start.headers['set-cookie']);
  expect(setCookie).toMatch(/^vivier_oidc_state=[A-Za-z0-9_-]{43}; Path=\/api\/v1\/auth\/oauth\/test; Max-Age=600; HttpOnly; SameSite=Lax/);
  const callback = await idp.authorize(authorization.toString(), CALLBACK);
  return { callback, cookie: setCookie.split(';')[0]!, authorization };
}

const finish = (callback: URL, cookie: string | undefined) =>
  auth.call('GET', `${callback.pathname}${callback.search}`, { headers: cookie ? { cookie } : {} });

/** Turns two-factor sign-in on for the signed-in caller: its TOTP secret and recovery codes (the current step's code is used up). */
async function enableTotp(harness: AuthHarness, signedIn: SignedIn): Promise<{ secret: Buffer; recoveryCodes: string[] }> {
  const identity = identityOf(signedIn.accessToken);
  const { secret } = (await harness.call('POST', '/api/v1/auth/mfa/totp/setup', { identity })).json<{ secret: string }>();
  const enabled = await harness.call('POST', '/api/v1/auth/mfa/totp/enable', { identity, body: { code: hotp(base32Decode(secret), await freshStep()) } });
  expect(enabled.statusCode, enabled.body).toBe(200);
  return { secret: base32Decode(secret), recoveryCodes: enabled.json<{ recoveryCodes: string[] }>().recoveryCodes };
}

async function sessionsOf(email: string): Promise<number> {
  const { rows } = await auth.pg.query<{ n: number }>('select count(*)::int as n from auth.sessions s join auth.users u on u.id = s.user_id where u.email = $1', [email]);
  return rows[0]!.n;
}

describe('OIDC sign-in', () => {
  it('redirects to the provider with an authorization code request: PKCE S256, state, nonce', async () => {
    const start = await auth.call('GET', '/api/v1/auth/oauth/test/start');
    const url = new URL(start.headers.location as string);
    expect(`${url.origin}`).toBe(idp.issuer);
    expect(Object.fromEntries(url.searchParams)).toMatchObject({
      response_type: 'code',
      client_id: idp.clientId,
      redirect_uri: CALLBACK,
      scope: 'openid email profile',
      state: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/),
      nonce: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/),
      code_challenge: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/),
      code_challenge_method: 'S256',
    });
    expect((await auth.call('GET', '/api/v1/auth/oauth/nope/start')).statusCode).toBe(404);
  });

  it('signs in through the real provider: code exchange, verified ID token, account created and linked, tokens issued', async () => {
    const who = account();
    const { callback, cookie } = await startAndAuthorize(who);
    expect(callback.searchParams.get('code')).toBeTruthy();
    const res = await finish(callback, cookie);
    expect(res.statusCode, res.body).toBe(200);
    expect(String(res.headers['set-cookie'])).toContain('Max-Age=0');
    const signedIn = res.json<SignedIn>();
    expect(signedIn.user).toMatchObject({ email: who.email, name: 'Grace Hopper', role: 'user' });
    expect(identityOf(signedIn.accessToken).sub).toBe(signedIn.user.id);
    expect((await auth.call('POST', '/api/v1/auth/refresh', { body: { refreshToken: signedIn.refreshToken } })).statusCode).toBe(200);
    const { rows } = await auth.pg.query('select provider, subject, user_id from auth.oidc_identities where subject = $1', [who.sub]);
    expect(rows).toEqual([{ provider: 'test', subject: who.sub, user_id: signedIn.user.id }]);
    const events = (await outboxEvents(auth.pg, signedIn.user.id)).map((e) => [e.type, e.data.method, e.data.oidcProvider]);
    expect(events).toEqual([
      ['vivier.auth.user.registered.v1', 'oidc', 'test'],
      ['vivier.auth.user.logged_in.v1', 'oidc', 'test'],
      ['vivier.auth.session.refreshed.v1', undefined, undefined],
    ]);

    // The same state cannot be used twice.
    expect((await finish(callback, cookie)).statusCode).toBe(400);
    // A second sign-in finds the linked account.
    const again = await startAndAuthorize(who);
    expect((await finish(again.callback, again.cookie)).json<SignedIn>().user.id).toBe(signedIn.user.id);
  });

  it('does not link a password account whose email nobody verified (pre-hijacking): 409 account_exists, the account untouched', async () => {
    const email = uniqueEmail('both');
    const registered = await auth.register(email);
    const { callback, cookie } = await startAndAuthorize(account({ email }));
    const res = await finish(callback, cookie);
    expect(res.statusCode, res.body).toBe(409);
    expect(res.json()).toMatchObject({ code: 'account_exists', status: 409 });
    const { rows } = await auth.pg.query('select count(*)::int as n from auth.oidc_identities where user_id = $1', [registered.user.id]);
    expect(rows[0].n).toBe(0);
    expect(await sessionsOf(email)).toBe(1); // the registration's own
    const failures = await outboxEvents(auth.pg, registered.user.id);
    expect(failures.at(-1)).toMatchObject({ type: 'vivier.auth.login.failed.v1', data: { reason: 'oidc_error', method: 'oidc' } });
    expect((await auth.login(email, PASSWORD)).statusCode).toBe(200);
  });

  it('links by verified email an account a provider has already vouched for, even with a password set since', async () => {
    const first = account();
    const once = await startAndAuthorize(first);
    const signedIn = (await finish(once.callback, once.cookie)).json<SignedIn>();
    await auth.pg.query("update auth.users set password_hash = 'set since' where id = $1", [signedIn.user.id]);
    const other = await startAndAuthorize(account({ email: first.email }));
    const res = await finish(other.callback, other.cookie);
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json<SignedIn>().user.id).toBe(signedIn.user.id);
  });

  it('refuses a mismatched state with 400 invalid_state and starts no session', async () => {
    const who = account();
    const { callback, cookie } = await startAndAuthorize(who);
    const tampered = new URL(callback);
    tampered.searchParams.set('state', 'A'.repeat(43));
    const res = await finish(tampered, cookie);
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code: 'invalid_state', status: 400 });
    // A state the server never issued, even with a matching cookie.
    const forged = await finish(tampered, `vivier_oidc_state=${'A'.repeat(43)}`);
    expect(forged.json()).toMatchObject({ code: 'invalid_state' });
    // The right state from a browser without the cookie (login CSRF) is refused too.
    const noCookie = await finish(callback, undefined);
    expect(noCookie.json()).toMatchObject({ code: 'invalid_state' });
    expect(await sessionsOf(who.email)).toBe(0);
    const { rows } = await auth.pg.query('select 1 from auth.users where email = $1', [who.email]);
    expect(rows).toHaveLength(0);
    const failures = await outboxEvents(auth.pg, 'anonymous');
    expect(failures.some((e) => e.type === 'vivier.auth.login.failed.v1' && e.data.reason === 'oidc_state_mismatch' && e.data.method === 'oidc')).toBe(true);
  });

  /**
   * A sign-in whose authorization request had one parameter changed on its way to the provider
   * (what an attacker's own request would carry), finished in the browser that started it.
   */
  async function finishAltered(who: TestAccount, param: string, value: string) {
    idp.signInAs(who);
    const start = await auth.call('GET', '/api/v1/auth/oauth/test/start');
    const cookie = String(start.headers['set-cookie']).split(';')[0]!;
    const authorization = new URL(start.headers.location as string);
    authorization.searchParams.set(param, value);
    return finish(await idp.authorize(authorization.toString(), CALLBACK), cookie);
  }

  /** 400 with `code`; no account, no session; `login.failed` with `reason` recorded. */
  async function expectRefused(who: TestAccount, res: Awaited<ReturnType<typeof finish>>, code: string, reason: string) {
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code, status: 400 });
    expect(await sessionsOf(who.email)).toBe(0);
    const { rows } = await auth.pg.query('select 1 from auth.users where email = $1', [who.email]);
    expect(rows).toHaveLength(0);
    const failures = await outboxEvents(auth.pg, 'anonymous');
    expect(failures.some((e) => e.type === 'vivier.auth.login.failed.v1' && e.data.reason === reason && e.data.method === 'oidc')).toBe(true);
  }

  it('refuses an ID token made for another nonce (a replayed or injected token) with 400 invalid_nonce, no session', async () => {
    const who = account();
    // The provider signs whatever nonce the request carries: an ID token for another sign-in.
    await expectRefused(who, await finishAltered(who, 'nonce', 'B'.repeat(43)), 'invalid_nonce', 'oidc_nonce_mismatch');
  });

  it('refuses a code issued for another PKCE challenge (an intercepted or injected code): the provider refuses the exchange, 400 oidc_error, no session', async () => {
    const who = account();
    // The code is bound to a challenge whose verifier auth does not hold (as a code from another
    // browser's sign-in would be): auth's verifier no longer matches at the token endpoint.
    const challenge = createHash('sha256').update('a verifier auth never made').digest('base64url');
    await expectRefused(who, await finishAltered(who, 'code_challenge', challenge), 'oidc_error', 'oidc_error');
  });

  it('answers 503 provider_unavailable when the provider cannot be reached, without its address, and starts no flow', async () => {
    const res = await auth.call('GET', '/api/v1/auth/oauth/down/start');
    expect(res.statusCode).toBe(503);
    expect(res.json()).toMatchObject({ status: 503, code: 'provider_unavailable' });
    expect(res.body).not.toContain('127.0.0.1');
    expect(res.headers['set-cookie']).toBeUndefined();
  });

  it('refuses a callback the provider sent with an error (the user cancelled) or from another issuer (a mix-up): 400 oidc_error, audited, no session', async () => {
    const cancelled = account();
    const first = await startAndAuthorize(cancelled);
    const denied = new URL(first.callback);
    denied.searchParams.delete('code');
    denied.searchParams.set('error', 'access_denied');
    const res = await finish(denied, first.cookie);
    await expectRefused(cancelled, res, 'oidc_error', 'oidc_error');
    expect(res.json().detail).toContain('access_denied');

    const mixedUp = account();
    const second = await startAndAuthorize(mixedUp);
    const elsewhere = new URL(second.callback);
    elsewhere.searchParams.set('iss', 'https://idp.attacker.example');
    await expectRefused(mixedUp, await finish(elsewhere, second.cookie), 'oidc_error', 'oidc_error');
  });

  it('refuses an account whose email the provider has not verified', async () => {
    const who = account({ email_verified: false });
    const { callback, cookie } = await startAndAuthorize(who);
    const res = await finish(callback, cookie);
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code: 'email_not_verified' });
    expect(await sessionsOf(who.email)).toBe(0);
  });

  it('gives the admin role to an email of ADMIN_EMAILS', async () => {
    const { callback, cookie } = await startAndAuthorize(account({ email: adminEmail }));
    const signedIn = (await finish(callback, cookie)).json<SignedIn>();
    expect(signedIn.user.role).toBe('admin');
    expect(identityOf(signedIn.accessToken).role).toBe('admin');
  });

  it('asks an account with two-factor sign-in on for its code after the provider: 401 mfa_required with an mfaToken, finished by POST /oauth/mfa', async () => {
    const who = account();
    const first = await startAndAuthorize(who);
    const signedIn = (await finish(first.callback, first.cookie)).json<SignedIn>();
    const { secret } = await enableTotp(auth, signedIn);
    const sessions = await sessionsOf(who.email);

    const again = await startAndAuthorize(who);
    const challenged = await finish(again.callback, again.cookie);
    expect(challenged.statusCode, challenged.body).toBe(401);
    expect(challenged.headers['content-type']).toMatch(/^application\/problem\+json/);
    const { mfaToken, expiresIn } = challenged.json<{ mfaToken: string; expiresIn: number }>();
    expect(challenged.json()).toMatchObject({ code: 'mfa_required', status: 401 });
    expect(mfaToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(expiresIn).toBe(300);
    expect(await sessionsOf(who.email)).toBe(sessions); // the provider alone signs nobody in

    const finishMfa = (token: string, mfaCode: string) => auth.call('POST', '/api/v1/auth/oauth/mfa', { body: { mfaToken: token, mfaCode } });
    expect((await finishMfa(mfaToken, '000000')).json()).toMatchObject({ status: 401, code: 'invalid_mfa_code' });
    const done = await finishMfa(mfaToken, hotp(secret, (await freshStep()) + 1)); // the next step's: this one's enabled MFA
    expect(done.statusCode, done.body).toBe(200);
    expect(done.headers['cache-control']).toBe('no-store');
    const finished = done.json<SignedIn>();
    expect(finished.user).toMatchObject({ id: signedIn.user.id, mfaEnabled: true });
    expect(identityOf(finished.accessToken).sub).toBe(signedIn.user.id);
    expect(await sessionsOf(who.email)).toBe(sessions + 1);
    // Single use.
    expect((await finishMfa(mfaToken, hotp(secret, await freshStep()))).json()).toMatchObject({ status: 401, code: 'invalid_mfa_token' });
    const events = (await outboxEvents(auth.pg, signedIn.user.id)).slice(-3).map((e) => [e.type, e.data.method, e.data.reason ?? e.data.mfaMethod]);
    expect(events).toEqual([
      ['vivier.auth.login.failed.v1', 'oidc', 'mfa_required'],
      ['vivier.auth.login.failed.v1', 'oidc', 'invalid_mfa_code'],
      ['vivier.auth.user.logged_in.v1', 'oidc', 'totp'],
    ]);

    // Five wrong codes use a token up: the right one is refused after them. (They also reach the
    // account's limit of failed sign-ins, 5, which is cleared here to see the token's own.)
    const third = await startAndAuthorize(who);
    const token = (await finish(third.callback, third.cookie)).json<{ mfaToken: string }>().mfaToken;
    for (let i = 0; i < 5; i++) expect((await finishMfa(token, '000000')).json()).toMatchObject({ code: 'invalid_mfa_code' });
    expect((await finishMfa(token, '000000')).json()).toMatchObject({ status: 429, code: 'rate_limited' });
    const redis = testRedis(auth.config);
    await redis.del(`auth:throttle:${hashedKey('login:account', who.email)}`);
    redis.disconnect();
    expect((await finishMfa(token, hotp(secret, await freshStep()))).json()).toMatchObject({ status: 401, code: 'invalid_mfa_token' });
    expect((await finishMfa('A'.repeat(43), '123456')).json()).toMatchObject({ status: 401, code: 'invalid_mfa_token' });
    expect((await finishMfa('short', '123456')).json()).toMatchObject({ status: 400, code: 'validation_failed' });
    expect(await sessionsOf(who.email)).toBe(sessions + 1);
  });

  it('redirects to OIDC_CLIENT_REDIRECT_URL with the tokens in the fragment when it is set', async () => {
    const redirecting = await startAuth({
      PUBLIC_BASE_URL,
      OIDC_CLIENT_REDIRECT_URL: 'https://app.example.test/signed-in',
      OIDC_PROVIDERS: JSON.stringify([
      { name: 'test', issuer: idp.issuer, clientId: idp.clientId, clientSecret: idp.clientSecret },
      // A provider nobody answers for (an outage, a wrong issuer).
      { name: 'down', issuer: 'http://127.0.0.1:9', clientId: 'c', clientSecret: 's' },
    ]),
    });
    try {
      idp.signInAs(account());
      const start = await redirecting.call('GET', '/api/v1/auth/oauth/test/start');
      const callback = await idp.authorize(start.headers.location as string, CALLBACK);
      const res = await redirecting.call('GET', `${callback.pathname}${callback.search}`, { headers: { cookie: String(start.headers['set-cookie']).split(';')[0]! } });
      expect(res.statusCode).toBe(302);
      const location = new URL(res.headers.location as string);
      expect(`${location.origin}${location.pathname}`).toBe('https://app.example.test/signed-in');
      const fragment = new URLSearchParams(location.hash.slice(1));
      expect(fragment.get('accessToken')).toMatch(/^ey/);
      expect(fragment.get('refreshToken')).toMatch(/^vrt_/);
      expect(fragment.get('expiresIn')).toBe('900');

      // With two-factor sign-in on, the fragment carries the mfaToken instead of tokens.
      const { secret } = await enableTotp(redirecting, { accessToken: fragment.get('accessToken')! } as SignedIn);
      const again = await redirecting.call('GET', '/api/v1/auth/oauth/test/start');
      const secondCallback = await idp.authorize(again.headers.location as string, CALLBACK);
      const challenged = await redirecting.call('GET', `${secondCallback.pathname}${secondCallback.search}`, { headers: { cookie: String(again.headers['set-cookie']).split(';')[0]! } });
      expect(challenged.statusCode).toBe(302);
      const mfaFragment = new URLSearchParams(new URL(challenged.headers.location as string).hash.slice(1));
      expect(mfaFragment.get('accessToken')).toBeNull();
      expect(mfaFragment.get('expiresIn')).toBe('300');
      const done = await redirecting.call('POST', '/api/v1/auth/oauth/mfa', { body: { mfaToken: mfaFragment.get('mfaToken'), mfaCode: hotp(secret, (await freshStep()) + 1) } });
      expect(done.statusCode, done.body).toBe(200);
    } finally {
      await redirecting.close();
    }
  });
});
