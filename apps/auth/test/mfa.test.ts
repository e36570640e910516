import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { base32Decode, hotp } from '../src/modules/mfa/totp.service';
import { PASSWORD, freshStep, identityOf, startAuth, uniqueEmail, type AuthHarness, type SignedIn } from './helpers';

let auth: AuthHarness;
beforeAll(async () => {
  auth = await startAuth({ LOGIN_MAX_FAILURES_PER_ACCOUNT: '50' });
});
afterAll(async () => {
  await auth.close();
});

interface MfaUser {
  email: string;
  signedIn: SignedIn;
  secret: Buffer;
  recoveryCodes: string[];
  /** The step whose code enabled MFA. */
  enabledWith: number;
}

async function userWithMfa(): Promise<MfaUser> {
  const email = uniqueEmail('mfa');
  const signedIn = await auth.register(email);
  const identity = identityOf(signedIn.accessToken);
  const setup = await auth.call('POST', '/api/v1/auth/mfa/totp/setup', { identity });
  expect(setup.statusCode).toBe(200);
  const { secret, otpauthUrl } = setup.json<{ secret: string; otpauthUrl: string }>();
  expect(secret).toMatch(/^[A-Z2-7]{32}$/);
  expect(otpauthUrl).toContain(`secret=${secret}`);
  const key = base32Decode(secret);
  const step = await freshStep();
  // The previous step's code (clock drift of one step) is accepted.
  const enable = await auth.call('POST', '/api/v1/auth/mfa/totp/enable', { identity, body: { code: hotp(key, step - 1) } });
  expect(enable.statusCode).toBe(200);
  return { email, signedIn, secret: key, recoveryCodes: enable.json<{ recoveryCodes: string[] }>().recoveryCodes, enabledWith: step - 1 };
}

describe('TOTP multi-factor sign-in', () => {
  it('needs a valid code to be enabled: wrong codes and codes ±2 steps away are refused', async () => {
    const signedIn = await auth.register(uniqueEmail('mfa'));
    const identity = identityOf(signedIn.accessToken);
    const enableEarly = await auth.call('POST', '/api/v1/auth/mfa/totp/enable', { identity, body: { code: '123456' } });
    expect(enableEarly.json()).toMatchObject({ code: 'mfa_not_set_up' });
    const { secret } = (await auth.call('POST', '/api/v1/auth/mfa/totp/setup', { identity })).json<{ secret: string }>();
    const key = base32Decode(secret);
    const step = await freshStep();
    for (const code of [String((Number(hotp(key, step)) + 1) % 1_000_000).padStart(6, '0'), hotp(key, step + 2), hotp(key, step - 2)]) {
      const res = await auth.call('POST', '/api/v1/auth/mfa/totp/enable', { identity, body: { code } });
      expect(res.statusCode).toBe(400);
      expect(res.json()).toMatchObject({ code: 'invalid_mfa_code' });
    }
    expect((await auth.call('GET', '/api/v1/auth/me', { identity })).json()).toMatchObject({ mfaEnabled: false });
    const ok = await auth.call('POST', '/api/v1/auth/mfa/totp/enable', { identity, body: { code: hotp(key, step + 1) } });
    expect(ok.statusCode).toBe(200);
    const { recoveryCodes } = ok.json<{ recoveryCodes: string[] }>();
    expect(recoveryCodes).toHaveLength(10);
    expect(new Set(recoveryCodes).size).toBe(10);
    expect((await auth.call('GET', '/api/v1/auth/me', { identity })).json()).toMatchObject({ mfaEnabled: true });
    // The secret is encrypted at rest and the recovery codes are hashed.
    const { rows } = await auth.pg.query('select f.secret_encrypted, r.code_hash from auth.totp_factors f join auth.recovery_codes r using (user_id) where f.user_id = $1', [signedIn.user.id]);
    const stored = JSON.stringify(rows);
    expect(stored).not.toContain(secret);
    for (const code of recoveryCodes) expect(stored).not.toContain(code.replace(/-/g, ''));
  });

  it('keeps an enrolled factor: setup and enable while it is on are 409 mfa_already_enabled, and its secret still signs in', async () => {
    const user = await userWithMfa();
    const identity = identityOf(user.signedIn.accessToken);
    const setup = await auth.call('POST', '/api/v1/auth/mfa/totp/setup', { identity });
    expect(setup.statusCode).toBe(409);
    expect(setup.json()).toMatchObject({ status: 409, code: 'mfa_already_enabled' });
    expect(setup.body).not.toMatch(/otpauth|secret"/);
    const enable = await auth.call('POST', '/api/v1/auth/mfa/totp/enable', { identity, body: { code: hotp(user.secret, user.enabledWith + 1) } });
    expect(enable.statusCode).toBe(409);
    expect(enable.json()).toMatchObject({ code: 'mfa_already_enabled' });
    const login = await auth.call('POST', '/api/v1/auth/login', { body: { email: user.email, password: PASSWORD, mfaCode: hotp(user.secret, user.enabledWith + 1) } });
    expect(login.statusCode).toBe(200);
  });

  it('answers mfa_required to a correct password without a code', async () => {
    const user = await userWithMfa();
    const res = await auth.login(user.email, PASSWORD);
    expect(res.statusCode).toBe(401);
    expect(res.json()).toMatchObject({ code: 'mfa_required' });
    // A wrong password still gets the usual answer: MFA state is not revealed before the password.
    expect((await auth.login(user.email, 'wrong password here')).json()).toMatchObject({ code: 'invalid_credentials' });
  });

  it('accepts the current code and ±1 step, once each; rejects ±2 steps and a replayed code', async () => {
    const user = await userWithMfa();
    const step = await freshStep();
    const login = (code: string) => auth.login(user.email, PASSWORD, { mfaCode: code });
    // The code that enabled MFA was used already.
    expect((await login(hotp(user.secret, user.enabledWith))).json()).toMatchObject({ code: 'invalid_mfa_code' });
    expect((await login(hotp(user.secret, step - 2))).statusCode).toBe(401);
    expect((await login(hotp(user.secret, step + 2))).statusCode).toBe(401);
    expect((await login(hotp(user.secret, step))).statusCode).toBe(200);
    const replay = await login(hotp(user.secret, step));
    expect(replay.statusCode).toBe(401);
    expect(replay.json()).toMatchObject({ code: 'invalid_mfa_code' });
    expect((await login(hotp(user.secret, step + 1))).statusCode).toBe(200);
  });

  it('takes each recovery code once (in any case, with or without dashes)', async () => {
    const user = await userWithMfa();
    const code = user.recoveryCodes[0]!;
    expect((await auth.login(user.email, PASSWORD, { mfaCode: code.toLowerCase() })).statusCode).toBe(200);
    const again = await auth.login(user.email, PASSWORD, { mfaCode: code });
    expect(again.statusCode).toBe(401);
    expect(again.json()).toMatchObject({ code: 'invalid_mfa_code' });
    expect((await auth.login(user.email, PASSWORD, { mfaCode: user.recoveryCodes[1]!.replace(/-/g, '') })).statusCode).toBe(200);
  });

  it('needs a valid code to be disabled, then signs in with the password alone', async () => {
    const user = await userWithMfa();
    const identity = identityOf(user.signedIn.accessToken);
    const step = await freshStep();
    const wrong = await auth.call('POST', '/api/v1/auth/mfa/totp/disable', { identity, body: { code: hotp(user.secret, step + 3) } });
    expect(wrong.statusCode).toBe(400);
    expect(wrong.json()).toMatchObject({ code: 'invalid_mfa_code' });
    const res = await auth.call('POST', '/api/v1/auth/mfa/totp/disable', { identity, body: { code: hotp(user.secret, step) } });
    expect(res.statusCode).toBe(204);
    expect((await auth.call('GET', '/api/v1/auth/me', { identity })).json()).toMatchObject({ mfaEnabled: false });
    expect((await auth.login(user.email, PASSWORD)).statusCode).toBe(200);
  });

  it('turning MFA on ends the user’s other sessions and invalidates earlier access tokens', async () => {
    const email = uniqueEmail('mfa');
    const first = await auth.register(email);
    const second = (await auth.login(email)).json<SignedIn>();
    const identity = identityOf(second.accessToken);
    const { secret } = (await auth.call('POST', '/api/v1/auth/mfa/totp/setup', { identity })).json<{ secret: string }>();
    const step = await freshStep();
    expect((await auth.call('POST', '/api/v1/auth/mfa/totp/enable', { identity, body: { code: hotp(base32Decode(secret), step) } })).statusCode).toBe(200);
    expect(await auth.app.redis.get(`auth:revoked-session:${identityOf(first.accessToken).sid}`)).toBe('1');
    expect(await auth.app.redis.get(`auth:tokens-valid-after:${first.user.id}`)).not.toBeNull();
    expect((await auth.call('POST', '/api/v1/auth/refresh', { body: { refreshToken: first.refreshToken } })).statusCode).toBe(401);
    expect((await auth.call('POST', '/api/v1/auth/refresh', { body: { refreshToken: second.refreshToken } })).statusCode).toBe(200);
  });
});
