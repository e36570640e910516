import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { base32Decode, hotp } from '../src/modules/mfa/totp.service';
import { decodeJwt } from 'jose';
import { PASSWORD, eventually, freshStep, identityOf, sleep, startAuth, testRedis, uniqueEmail, type AuthHarness, type SignedIn } from './helpers';

let auth: AuthHarness;
beforeAll(async () => {
  auth = await startAuth();
});
afterAll(async () => {
  await auth.close();
});

interface SessionItem {
  id: string;
  createdAt: string;
  lastUsedAt: string;
  userAgent: string | null;
  ip: string | null;
  current: boolean;
}

async function twoLogins(): Promise<{ email: string; a: SignedIn; b: SignedIn }> {
  const email = uniqueEmail();
  const a = await auth.register(email, { ip: '192.0.2.10' });
  const res = await auth.call('POST', '/api/v1/auth/login', { ip: '192.0.2.20', userAgent: 'Firefox/140', body: { email, password: PASSWORD } });
  return { email, a, b: res.json<SignedIn>() };
}

const refresh = (refreshToken: string) => auth.call('POST', '/api/v1/auth/refresh', { body: { refreshToken } });

describe('sessions', () => {
  it('lists the caller’s active sessions, newest first, with the current one flagged', async () => {
    const { a, b } = await twoLogins();
    const res = await auth.call('GET', '/api/v1/auth/sessions', { identity: identityOf(b.accessToken) });
    expect(res.statusCode).toBe(200);
    const { items, nextCursor } = res.json<{ items: SessionItem[]; nextCursor: string | null }>();
    expect(nextCursor).toBeNull();
    expect(items.map((s) => s.id)).toEqual([identityOf(b.accessToken).sid, identityOf(a.accessToken).sid]);
    expect(items[0]).toMatchObject({ current: true, ip: '192.0.2.20', userAgent: 'Firefox/140' });
    expect(items[1]).toMatchObject({ current: false, ip: '192.0.2.10' });
    const page = await auth.call('GET', '/api/v1/auth/sessions?limit=1', { identity: identityOf(b.accessToken) });
    const first = page.json<{ items: SessionItem[]; nextCursor: string }>();
    expect(first.items).toHaveLength(1);
    const second = await auth.call('GET', `/api/v1/auth/sessions?limit=1&cursor=${first.nextCursor}`, { identity: identityOf(b.accessToken) });
    expect(second.json<{ items: SessionItem[] }>().items[0]!.id).toBe(identityOf(a.accessToken).sid);
    // Cursors that decode but name no row PostgreSQL would take: a 400, never a database error.
    const crafted = (at: string, id: string) => Buffer.from(JSON.stringify([at, id])).toString('base64url');
    for (const cursor of [crafted(new Date().toISOString(), '-'.repeat(36)), crafted('-271821-04-20T00:00:00Z', randomUUID()), crafted(new Date().toISOString(), 'x'.repeat(36))]) {
      const res = await auth.call('GET', `/api/v1/auth/sessions?cursor=${cursor}`, { identity: identityOf(b.accessToken) });
      expect(res.json(), cursor).toMatchObject({ status: 400, code: 'validation_failed' });
    }
  });

  it('revokes one session: its refresh token fails and the gateway key is set; another user’s session is 404', async () => {
    const { a, b } = await twoLogins();
    const sidA = identityOf(a.accessToken).sid!;
    const stranger = await auth.register();
    const foreign = await auth.call('DELETE', `/api/v1/auth/sessions/${sidA}`, { identity: identityOf(stranger.accessToken) });
    expect(foreign.statusCode).toBe(404);
    expect((await auth.call('DELETE', `/api/v1/auth/sessions/${randomUUID()}`, { identity: identityOf(b.accessToken) })).statusCode).toBe(404);
    expect(await auth.app.redis.exists(`auth:revoked-session:${sidA}`)).toBe(0);

    const res = await auth.call('DELETE', `/api/v1/auth/sessions/${sidA}`, { identity: identityOf(b.accessToken) });
    expect(res.statusCode).toBe(204);
    expect(await auth.app.redis.get(`auth:revoked-session:${sidA}`)).toBe('1');
    expect((await refresh(a.refreshToken)).statusCode).toBe(401);
    expect((await refresh(b.refreshToken)).statusCode).toBe(200);
    // A revoked session can no longer act through auth either.
    expect((await auth.call('GET', '/api/v1/auth/sessions', { identity: identityOf(a.accessToken) })).statusCode).toBe(401);
  });

  it('logs out one session with its refresh token: the key is set and published for the gateways', async () => {
    const { a, b } = await twoLogins();
    const sidA = identityOf(a.accessToken).sid!;
    const subscriber = testRedis(auth.config);
    const messages: string[] = [];
    try {
      await subscriber.subscribe(`${auth.config.REDIS_KEY_PREFIX}auth:revocations`);
      subscriber.on('message', (_channel, message) => messages.push(message));
      const res = await auth.call('POST', '/api/v1/auth/logout', { body: { refreshToken: a.refreshToken } });
      expect(res.statusCode).toBe(204);
      expect(await auth.app.redis.get(`auth:revoked-session:${sidA}`)).toBe('1');
      expect((await refresh(a.refreshToken)).statusCode).toBe(401);
      expect((await refresh(b.refreshToken)).statusCode).toBe(200);
      // Other test files publish on the same channel meanwhile: this user's messages only.
      const mine = () => messages.map((m) => JSON.parse(m) as { userId: string }).filter((m) => m.userId === a.user.id);
      await eventually(async () => mine().length > 0, 5000, 'a revocation message');
      expect(mine()).toEqual([{ userId: a.user.id, sid: sidA }]);
      // Logging out again, or with an unknown token, is still 204.
      expect((await auth.call('POST', '/api/v1/auth/logout', { body: { refreshToken: a.refreshToken } })).statusCode).toBe(204);
    } finally {
      subscriber.disconnect();
    }
  });

  it('dates tokens and tokens-valid-after to the millisecond: a token issued earlier in the same second is older', async () => {
    const registered = await auth.register(uniqueEmail('same-second'));
    // Early in a second, so that the refresh and the logout below fall in the same one.
    const msIntoSecond = Date.now() % 1000;
    if (msIntoSecond > 100) await sleep(1000 - msIntoSecond);
    const signedIn = (await refresh(registered.refreshToken)).json<SignedIn>();
    const { iat } = decodeJwt(signedIn.accessToken) as { iat: number };
    expect(await auth.call('POST', '/api/v1/auth/logout-all', { identity: identityOf(signedIn.accessToken) })).toMatchObject({ statusCode: 204 });
    const validAfter = Number(await auth.app.redis.get(`auth:tokens-valid-after:${registered.user.id}`));
    expect(Math.floor(validAfter)).toBe(Math.floor(iat)); // the same second…
    expect(iat).toBeLessThan(validAfter); // …and the token is still older: the gateway refuses it
  });

  it('logs out everywhere: every session revoked, their keys set, and tokens-valid-after written', async () => {
    const { a, b } = await twoLogins();
    const before = Math.floor(Date.now() / 1000);
    const res = await auth.call('POST', '/api/v1/auth/logout-all', { identity: identityOf(b.accessToken) });
    expect(res.statusCode).toBe(204);
    for (const s of [a, b]) {
      expect(await auth.app.redis.get(`auth:revoked-session:${identityOf(s.accessToken).sid}`)).toBe('1');
      expect((await refresh(s.refreshToken)).statusCode).toBe(401);
    }
    const validAfter = Number(await auth.app.redis.get(`auth:tokens-valid-after:${a.user.id}`));
    expect(validAfter).toBeGreaterThanOrEqual(before);
    expect(validAfter).toBeLessThanOrEqual(Date.now() / 1000);
    const ttl = await auth.app.redis.ttl(`auth:tokens-valid-after:${a.user.id}`);
    expect(ttl).toBeGreaterThan(900);
    expect(ttl).toBeLessThanOrEqual(960);
  });

  it('changing the password ends the other sessions and invalidates earlier tokens', async () => {
    const { email, a, b } = await twoLogins();
    const wrong = await auth.call('POST', '/api/v1/auth/password', { identity: identityOf(b.accessToken), body: { currentPassword: 'not it at all', newPassword: 'a brand new passphrase 77' } });
    expect(wrong.statusCode).toBe(400);
    const res = await auth.call('POST', '/api/v1/auth/password', { identity: identityOf(b.accessToken), body: { currentPassword: PASSWORD, newPassword: 'a brand new passphrase 77' } });
    expect(res.statusCode).toBe(204);
    expect((await refresh(a.refreshToken)).statusCode).toBe(401);
    expect(await auth.app.redis.get(`auth:revoked-session:${identityOf(a.accessToken).sid}`)).toBe('1');
    expect((await refresh(b.refreshToken)).statusCode).toBe(200);
    expect(await auth.app.redis.get(`auth:tokens-valid-after:${a.user.id}`)).not.toBeNull();
    expect((await auth.login(email, PASSWORD)).statusCode).toBe(401);
    expect((await auth.login(email, 'a brand new passphrase 77')).statusCode).toBe(200);
  });
  it('tells the gateways at once (pub/sub) when a password change or MFA on/off ends the other sessions', async () => {
    const { a, b } = await twoLogins();
    const userId = a.user.id;
    const sidA = identityOf(a.accessToken).sid;
    const current = identityOf(b.accessToken);
    const subscriber = testRedis(auth.config);
    const messages: Array<Record<string, string>> = [];
    try {
      await subscriber.subscribe(`${auth.config.REDIS_KEY_PREFIX}auth:revocations`);
      // The channel is the run's: other test files running alongside publish on it too.
      subscriber.on('message', (_channel, message) => {
        const parsed = JSON.parse(message) as Record<string, string>;
        if (parsed.userId === userId) messages.push(parsed);
      });
      const changed = await auth.call('POST', '/api/v1/auth/password', { identity: current, body: { currentPassword: PASSWORD, newPassword: 'a brand new passphrase 79' } });
      expect(changed.statusCode).toBe(204);
      // The other session, and every token issued until now (the caller refreshes its own).
      await eventually(async () => messages.length >= 2, 5000, 'the revocation messages');
      expect(messages).toEqual([{ userId, sid: sidA }, { userId }]);

      messages.length = 0;
      const again = (await auth.call('POST', '/api/v1/auth/login', { body: { email: a.user.email, password: 'a brand new passphrase 79' } })).json<SignedIn>();
      const { secret } = (await auth.call('POST', '/api/v1/auth/mfa/totp/setup', { identity: identityOf(again.accessToken) })).json<{ secret: string }>();
      const step = await freshStep();
      const enabled = await auth.call('POST', '/api/v1/auth/mfa/totp/enable', { identity: identityOf(again.accessToken), body: { code: hotp(base32Decode(secret), step) } });
      expect(enabled.statusCode).toBe(200);
      // The session that changed the password is another one now: it ends too.
      await eventually(async () => messages.some((m) => m.sid === current.sid) && messages.some((m) => !m.sid), 5000, 'the messages of MFA on');
      messages.length = 0;
      const [recovery] = enabled.json<{ recoveryCodes: string[] }>().recoveryCodes;
      const third = (await auth.call('POST', '/api/v1/auth/login', { body: { email: a.user.email, password: 'a brand new passphrase 79', mfaCode: recovery } })).json<SignedIn>();
      const [, second] = enabled.json<{ recoveryCodes: string[] }>().recoveryCodes;
      expect((await auth.call('POST', '/api/v1/auth/mfa/totp/disable', { identity: identityOf(third.accessToken), body: { code: second } })).statusCode).toBe(204);
      await eventually(async () => messages.some((m) => m.sid === identityOf(again.accessToken).sid) && messages.some((m) => !m.sid), 5000, 'the messages of MFA off');
    } finally {
      subscriber.disconnect();
    }
  });
});

describe('a sign-in racing a change of credentials', () => {
  it('a password change that commits while a sign-in with the old password is under way ends that session too', async () => {
    const email = uniqueEmail();
    const owner = await auth.register(email);
    const lock = await auth.pg.connect();
    try {
      // The sign-in has checked the old password and is storing its session; its refresh token
      // waits behind this lock (the password change touches no refresh token).
      await lock.query('begin');
      await lock.query('lock table auth.refresh_tokens in share mode');
      const signingIn = auth.login(email);
      await eventually(async () => ((await auth.pg.query(`select 1 from pg_stat_activity where wait_event_type = 'Lock' and query like '%refresh_tokens%'`)).rowCount ?? 0) > 0);
      const changing = auth.call('POST', '/api/v1/auth/password', { identity: identityOf(owner.accessToken), body: { currentPassword: PASSWORD, newPassword: 'a brand new passphrase 78' } });
      // Let the change run as far as it can before the sign-in goes on.
      await new Promise((r) => setTimeout(r, 300));
      await lock.query('rollback');
      const [signedIn, changed] = await Promise.all([signingIn, changing]);
      expect(changed.statusCode).toBe(204);
      // Either the sign-in was refused, or its session was ended with the others: its refresh token is no good.
      if (signedIn.statusCode === 200) expect((await refresh(signedIn.json<SignedIn>().refreshToken)).statusCode).toBe(401);
      else expect(signedIn.json()).toMatchObject({ status: 401, code: 'invalid_credentials' });
    } finally {
      lock.release();
    }
  });
});
