import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORD, identityOf, randomIp, startAuth, uniqueEmail, type AuthHarness } from './helpers';

let auth: AuthHarness;
beforeAll(async () => {
  auth = await startAuth({ LOGIN_MAX_FAILURES_PER_ACCOUNT: '3', LOGIN_MAX_FAILURES_PER_IP: '5', LOGIN_THROTTLE_WINDOW_SECONDS: '300' });
});
afterAll(async () => {
  await auth.close();
});

describe('login throttling', () => {
  it('throttles an account after N failures (429 + Retry-After, even with the right password) while another account still signs in', async () => {
    const victim = uniqueEmail('victim');
    const other = uniqueEmail('other');
    await auth.register(victim);
    await auth.register(other);
    // From a new address each time: the per-account limit holds whatever the source.
    for (let i = 0; i < 3; i += 1) expect((await auth.login(victim, `guess number ${i}`, { ip: randomIp() })).statusCode).toBe(401);
    const throttled = await auth.login(victim, PASSWORD, { ip: randomIp() });
    expect(throttled.statusCode).toBe(429);
    expect(throttled.json()).toMatchObject({ code: 'rate_limited', status: 429 });
    const retryAfter = Number(throttled.headers['retry-after']);
    expect(retryAfter).toBeGreaterThan(250);
    expect(retryAfter).toBeLessThanOrEqual(300);
    expect((await auth.login(other, PASSWORD)).statusCode).toBe(200);
  });

  it("failed sign-ins by strangers do not stop the signed-in owner from changing the password, which has a counter of its own", async () => {
    const email = uniqueEmail('owner');
    const signedIn = await auth.register(email);
    const identity = identityOf(signedIn.accessToken);
    // Anyone who knows the address uses up its sign-in tries.
    for (let i = 0; i < 3; i += 1) expect((await auth.login(email, `stranger guess ${i}`, { ip: randomIp() })).statusCode).toBe(401);
    expect((await auth.login(email, PASSWORD, { ip: randomIp() })).statusCode).toBe(429);
    // The owner, signed in, still secures the account (it was 429 too).
    const newPassword = 'a brand new passphrase 77';
    const changed = await auth.call('POST', '/api/v1/auth/password', { identity, body: { currentPassword: PASSWORD, newPassword } });
    expect(changed.statusCode).toBe(204);
    // And guesses of the current password through the session are throttled on their own.
    const other = await auth.register(uniqueEmail('held'));
    const held = identityOf(other.accessToken);
    for (let i = 0; i < 3; i += 1) {
      const wrong = await auth.call('POST', '/api/v1/auth/password', { identity: held, body: { currentPassword: `guess ${i}`, newPassword } });
      expect(wrong.statusCode).toBe(400);
    }
    expect((await auth.call('POST', '/api/v1/auth/password', { identity: held, body: { currentPassword: PASSWORD, newPassword } })).statusCode).toBe(429);
  });

  it('throttles an unknown email exactly like a real one (no enumeration through the throttle)', async () => {
    const ghost = uniqueEmail('ghost');
    for (let i = 0; i < 3; i += 1) expect((await auth.login(ghost, `guess ${i}`)).statusCode).toBe(401);
    expect((await auth.login(ghost, 'guess 4')).statusCode).toBe(429);
  });

  it('throttles a client IP after N failures across accounts, while other IPs sign in to the same accounts', async () => {
    const ip = randomIp();
    const emails = await Promise.all([1, 2, 3].map(async (i) => (await auth.register(uniqueEmail(`ip${i}`))).user.email));
    // 5 failures spread over accounts (none reaches its own limit of 3)...
    for (const [i, email] of [emails[0], emails[1], emails[2], emails[0], emails[1]].entries()) {
      expect((await auth.login(email!, `wrong ${i}`, { ip })).statusCode).toBe(401);
    }
    // ...then the address is throttled, even for a correct password...
    const throttled = await auth.login(emails[2]!, PASSWORD, { ip });
    expect(throttled.statusCode).toBe(429);
    expect(Number(throttled.headers['retry-after'])).toBeGreaterThan(0);
    // ...and those accounts still sign in from elsewhere.
    expect((await auth.login(emails[2]!, PASSWORD, { ip: randomIp() })).statusCode).toBe(200);
  });

  it('does not count successful sign-ins, and a success clears the account counter', async () => {
    const email = uniqueEmail();
    await auth.register(email);
    for (let round = 0; round < 3; round += 1) {
      expect((await auth.login(email, 'wrong one')).statusCode).toBe(401);
      expect((await auth.login(email, 'wrong two')).statusCode).toBe(401);
      expect((await auth.login(email, PASSWORD, { ip: randomIp() })).statusCode).toBe(200);
    }
  });
});
