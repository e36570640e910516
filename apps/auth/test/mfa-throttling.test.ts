import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { base32Decode, hotp } from '../src/modules/mfa/totp.service';
import { PASSWORD, freshStep, identityOf, startAuth, uniqueEmail, type AuthHarness } from './helpers';

let auth: AuthHarness;
beforeAll(async () => {
  auth = await startAuth({ LOGIN_MAX_FAILURES_PER_ACCOUNT: '3', LOGIN_THROTTLE_WINDOW_SECONDS: '900' });
});
afterAll(async () => {
  await auth.close();
});

describe('MFA codes to turn it on or off', () => {
  it('count against the account: after the limit of wrong codes even the right one is refused with 429', async () => {
    const email = uniqueEmail('mfa-guess');
    const signedIn = await auth.register(email);
    const identity = identityOf(signedIn.accessToken);
    const { secret } = (await auth.call('POST', '/api/v1/auth/mfa/totp/setup', { identity })).json<{ secret: string }>();
    const key = base32Decode(secret);
    const step = await freshStep();
    // A wrong code, then the right one: the right one clears what the wrong one counted.
    const wrong = String((Number(hotp(key, step)) + 1) % 1_000_000).padStart(6, '0');
    expect((await auth.call('POST', '/api/v1/auth/mfa/totp/enable', { identity, body: { code: wrong } })).statusCode).toBe(400);
    expect((await auth.call('POST', '/api/v1/auth/mfa/totp/enable', { identity, body: { code: hotp(key, step) } })).statusCode).toBe(200);

    // Someone holding the session guesses to turn it off.
    for (let i = 0; i < 3; i += 1) {
      const res = await auth.call('POST', '/api/v1/auth/mfa/totp/disable', { identity, body: { code: String(100_000 + i) } });
      expect(res.json()).toMatchObject({ code: 'invalid_mfa_code' });
    }
    const limited = await auth.call('POST', '/api/v1/auth/mfa/totp/disable', { identity, body: { code: hotp(key, step + 1) } });
    expect(limited.statusCode).toBe(429);
    expect(limited.json()).toMatchObject({ code: 'rate_limited' });
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect((await auth.call('GET', '/api/v1/auth/me', { identity })).json()).toMatchObject({ mfaEnabled: true });
    // Those guesses are counted apart from the owner's sign-ins: the password still leads on to the code.
    expect((await auth.login(email, PASSWORD)).json()).toMatchObject({ code: 'mfa_required' });
  });
});
