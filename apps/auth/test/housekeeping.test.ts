import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sessionsHousekeeping } from '../src/modules/sessions/sessions.housekeeping';
import { startAuth, type AuthHarness } from './helpers';

// The task auth's relay leader runs with the messaging tables' purges (which leader that is in a
// test run is not up to this file, so the task is run here directly, on the real schema).
describe('sessions housekeeping', () => {
  let auth: AuthHarness;
  beforeAll(async () => {
    auth = await startAuth();
  });
  afterAll(async () => {
    await auth?.close();
  });

  it('deletes sessions expired for a day or revoked for 30 days, with their refresh tokens, and keeps the rest', async () => {
    const signedIn = await auth.register();
    const userId = signedIn.user.id;
    const sessions = { live: '', expired: randomUUID(), justExpired: randomUUID(), revokedLongAgo: randomUUID(), revokedLately: randomUUID() };
    sessions.live = (await auth.pg.query('select id from auth.sessions where user_id = $1', [userId])).rows[0].id;
    const insert = (id: string, expiresAt: string, revokedAt: string | null) =>
      auth.pg.query(
        `insert into auth.sessions (id, user_id, method, expires_at, revoked_at) values ($1, $2, 'password', now() + $3::interval, now() + $4::interval)`,
        [id, userId, expiresAt, revokedAt],
      );
    await insert(sessions.expired, '-2 days', null);
    await insert(sessions.justExpired, '-1 hour', null);
    await insert(sessions.revokedLongAgo, '3 days', '-31 days');
    await insert(sessions.revokedLately, '3 days', '-29 days');
    await auth.pg.query(`insert into auth.refresh_tokens (session_id, token_hash) values ($1, $2)`, [sessions.expired, randomUUID()]);

    const client = await auth.pg.connect();
    try {
      const removed = await sessionsHousekeeping({ revokedRetentionDays: 30 }).run(client, new AbortController().signal);
      expect(removed.sessions).toBeGreaterThanOrEqual(2);
    } finally {
      client.release();
    }
    const left = (await auth.pg.query('select id from auth.sessions where user_id = $1', [userId])).rows.map((r) => r.id as string).sort();
    expect(left).toEqual([sessions.live, sessions.justExpired, sessions.revokedLately].sort());
    expect((await auth.pg.query('select 1 from auth.refresh_tokens where session_id = $1', [sessions.expired])).rows).toHaveLength(0);
    // The user still signs in with the live session's refresh token.
    const refreshed = await auth.call('POST', '/api/v1/auth/refresh', { body: { refreshToken: signedIn.refreshToken } });
    expect(refreshed.statusCode).toBe(200);
  });
});
