import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { identityOf, sleep, startAuth, type AuthHarness } from './helpers';

interface Pair {
  accessToken: string;
  refreshToken: string;
  expiresIn: number;
}

let auth: AuthHarness;
beforeAll(async () => {
  // A shorter grace window than the default 5 s, so reuse after it is quick to show (still long
  // enough for 10 queued concurrent refreshes on a busy machine).
  auth = await startAuth({ REFRESH_TOKEN_REUSE_GRACE_MS: '2000' });
});
afterAll(async () => {
  await auth.close();
});

const refresh = (refreshToken: string) => auth.call('POST', '/api/v1/auth/refresh', { body: { refreshToken } });

describe('refresh tokens', () => {
  it('are opaque, stored only as a hash, and rotate on every use within the same session', async () => {
    const signedIn = await auth.register();
    const { rows } = await auth.pg.query<{ token_hash: string }>(
      'select t.token_hash from auth.refresh_tokens t join auth.sessions s on s.id = t.session_id where s.user_id = $1',
      [signedIn.user.id],
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]!.token_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(rows)).not.toContain(signedIn.refreshToken.slice(4));

    const first = await refresh(signedIn.refreshToken);
    expect(first.statusCode).toBe(200);
    const pair1 = first.json<Pair>();
    expect(pair1.refreshToken).not.toBe(signedIn.refreshToken);
    expect(pair1.refreshToken).toMatch(/^vrt_[A-Za-z0-9_-]{43}$/);
    expect(identityOf(pair1.accessToken).sid).toBe(identityOf(signedIn.accessToken).sid);
    const pair2 = (await refresh(pair1.refreshToken)).json<Pair>();
    expect(pair2.refreshToken).not.toBe(pair1.refreshToken);
    expect((await refresh(pair2.refreshToken)).statusCode).toBe(200);
  });

  it('answer a rotated token presented again within the grace window with the same successor, revoking nothing', async () => {
    const signedIn = await auth.register();
    const first = (await refresh(signedIn.refreshToken)).json<Pair>();
    const again = await refresh(signedIn.refreshToken);
    expect(again.statusCode).toBe(200);
    expect(again.json<Pair>().refreshToken).toBe(first.refreshToken);
    // The successor still works: nothing was revoked.
    expect((await refresh(first.refreshToken)).statusCode).toBe(200);
  });

  it('revoke the whole login when a rotated token comes back after the grace window: token_reused, and the newest token fails too', async () => {
    const signedIn = await auth.register();
    const sid = identityOf(signedIn.accessToken).sid!;
    const newest = (await refresh(signedIn.refreshToken)).json<Pair>();
    await sleep(2300);
    const reused = await refresh(signedIn.refreshToken);
    expect(reused.statusCode).toBe(401);
    expect(reused.json()).toMatchObject({ code: 'token_reused' });
    const afterwards = await refresh(newest.refreshToken);
    expect(afterwards.statusCode).toBe(401);
    expect(afterwards.json()).toMatchObject({ code: 'invalid_token' });
    // The gateway learns it at once: access tokens of that session are refused.
    expect(await auth.app.redis.get(`auth:revoked-session:${sid}`)).toBe('1');
    const ttl = await auth.app.redis.ttl(`auth:revoked-session:${sid}`);
    expect(ttl).toBeGreaterThan(900);
    expect(ttl).toBeLessThanOrEqual(960);
    const { rows } = await auth.pg.query<{ revoked_reason: string }>('select revoked_reason from auth.sessions where id = $1', [sid]);
    expect(rows[0]!.revoked_reason).toBe('reuse_detected');
  });

  it('detect reuse by the database clock: a rotation by an instance whose clock runs ahead does not stretch the grace window', async () => {
    const signedIn = await auth.register();
    // This instance's clock a minute ahead while it rotates the token (NTP gone wrong on one pod).
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 60_000);
    try {
      expect((await refresh(signedIn.refreshToken)).statusCode).toBe(200);
    } finally {
      vi.useRealTimers();
    }
    await sleep(2300);
    // Past the 2 s grace by any clock but the one that ran ahead: reuse.
    const reused = await refresh(signedIn.refreshToken);
    expect(reused.json()).toMatchObject({ code: 'token_reused' });
  });

  it('give 10 concurrent refreshes of one token the same single successor', async () => {
    const signedIn = await auth.register();
    const answers = await Promise.all(Array.from({ length: 10 }, () => refresh(signedIn.refreshToken)));
    expect(answers.map((a) => a.statusCode)).toEqual(Array(10).fill(200));
    const successors = new Set(answers.map((a) => a.json<Pair>().refreshToken));
    expect(successors.size).toBe(1);
    const sid = identityOf(signedIn.accessToken).sid!;
    const { rows } = await auth.pg.query<{ n: number }>('select count(*)::int as n from auth.refresh_tokens where session_id = $1', [sid]);
    expect(rows[0]!.n).toBe(2);
    expect((await refresh([...successors][0]!)).statusCode).toBe(200);
  });

  it('refuse unknown and malformed tokens with invalid_token', async () => {
    expect((await refresh('vrt_' + 'A'.repeat(43))).json()).toMatchObject({ code: 'invalid_token', status: 401 });
    expect((await refresh('not-a-token')).statusCode).toBe(401);
  });

  it('end at the absolute lifetime of the login, however often they were rotated', async () => {
    const short = await startAuth({ REFRESH_TOKEN_LIFETIME_SECONDS: '3' });
    try {
      const signedIn = await short.register();
      let token = signedIn.refreshToken;
      const started = Date.now();
      while (Date.now() - started < 1500) {
        const res = await short.call('POST', '/api/v1/auth/refresh', { body: { refreshToken: token } });
        expect(res.statusCode).toBe(200);
        token = res.json<Pair>().refreshToken;
        await sleep(300);
      }
      await sleep(3200 - (Date.now() - started));
      const expired = await short.call('POST', '/api/v1/auth/refresh', { body: { refreshToken: token } });
      expect(expired.statusCode).toBe(401);
      expect(expired.json()).toMatchObject({ code: 'invalid_token' });
    } finally {
      await short.close();
    }
  });
});
