import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORD, eventually, identityOf, outboxEvents, sleep, startAuth, uniqueEmail, type AuthHarness, type SignedIn } from './helpers';

let auth: AuthHarness;
beforeAll(async () => {
  auth = await startAuth({ REFRESH_TOKEN_REUSE_GRACE_MS: '200' });
});
afterAll(async () => {
  await auth.close();
});

const IP = '203.0.113.7';
const UA = 'Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0';

describe('auth events through the outbox', () => {
  it('records register, login, failed logins and token reuse with who, what, when (UTC), IP and user agent — and no secret', async () => {
    const email = uniqueEmail('audit');
    const registered = await auth.call('POST', '/api/v1/auth/register', { ip: IP, userAgent: UA, body: { email, password: PASSWORD, name: 'Ada' } });
    const signedIn = registered.json<SignedIn>();
    const userId = signedIn.user.id;
    const wrongPassword = 'not-my-password-123';
    await auth.call('POST', '/api/v1/auth/login', { ip: IP, userAgent: UA, body: { email, password: wrongPassword } });
    const login = (await auth.call('POST', '/api/v1/auth/login', { ip: IP, userAgent: UA, body: { email, password: PASSWORD } })).json<SignedIn>();
    const ghost = uniqueEmail('ghost');
    await auth.call('POST', '/api/v1/auth/login', { ip: IP, userAgent: UA, body: { email: ghost, password: wrongPassword } });
    const rotated = (await auth.call('POST', '/api/v1/auth/refresh', { ip: IP, userAgent: UA, body: { refreshToken: login.refreshToken } })).json<SignedIn>();
    await sleep(300);
    const reuse = await auth.call('POST', '/api/v1/auth/refresh', { ip: IP, userAgent: UA, body: { refreshToken: login.refreshToken } });
    expect(reuse.json()).toMatchObject({ code: 'token_reused' });

    const events = await outboxEvents(auth.pg, userId);
    expect(events.map((e) => e.type)).toEqual([
      'vivier.auth.user.registered.v1',
      'vivier.auth.user.logged_in.v1',
      'vivier.auth.login.failed.v1',
      'vivier.auth.user.logged_in.v1',
      'vivier.auth.session.revoked.v1',
    ]);
    const [registeredEvent, , failed, loggedIn, revoked] = events;
    expect(registeredEvent!.data).toMatchObject({ userId, email, name: 'Ada', role: 'user', method: 'password', actor: { ip: IP, userAgent: UA } });
    expect(failed!.data).toMatchObject({ email, userId, method: 'password', reason: 'invalid_password', actor: { ip: IP, userAgent: UA } });
    expect(loggedIn!.data).toMatchObject({ userId, sessionId: identityOf(login.accessToken).sid, method: 'password', actor: { userId, ip: IP, userAgent: UA } });
    expect(revoked!.data).toMatchObject({ reason: 'reuse_detected', familyId: identityOf(login.accessToken).sid, sessionIds: [identityOf(login.accessToken).sid], actor: { ip: IP, userAgent: UA } });

    const unknown = await outboxEvents(auth.pg, ghost);
    expect(unknown.map((e) => [e.type, e.data.reason])).toEqual([['vivier.auth.login.failed.v1', 'unknown_email']]);

    const { rows } = await auth.pg.query<{ envelope: { time: string; source: string; subject: string } }>('select envelope from auth.outbox where key = $1', [userId]);
    for (const { envelope } of rows) {
      expect(envelope.time).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);
      expect(envelope.source).toBe('vivier/auth');
    }
    const everything = JSON.stringify([...events, ...unknown].map((e) => e.raw));
    for (const secret of [PASSWORD, wrongPassword, signedIn.refreshToken, signedIn.accessToken, login.refreshToken, login.accessToken, rotated.refreshToken, rotated.accessToken]) {
      expect(everything).not.toContain(secret);
    }
    expect(everything).not.toMatch(/vrt_|vk_|password"\s*:|argon2/);
  });

  it('records API key and MFA changes too, without the key', async () => {
    const signedIn = await auth.register();
    const identity = identityOf(signedIn.accessToken);
    const created = (await auth.call('POST', '/api/v1/auth/api-keys', { identity, body: { name: 'ci' } })).json<{ id: string; key: string }>();
    await auth.call('DELETE', `/api/v1/auth/api-keys/${created.id}`, { identity });
    const events = await outboxEvents(auth.pg, signedIn.user.id);
    expect(events.slice(-2).map((e) => [e.type, e.data.apiKeyId])).toEqual([
      ['vivier.auth.api_key.created.v1', created.id],
      ['vivier.auth.api_key.revoked.v1', created.id],
    ]);
    expect(JSON.stringify(events)).not.toContain(created.key);
  });

  it('hands the events to Kafka through the relay', async () => {
    const signedIn = await auth.register();
    await eventually(async () => {
      const { rows } = await auth.pg.query<{ pending: number }>('select count(*) filter (where published_at is null)::int as pending from auth.outbox where key = $1', [signedIn.user.id]);
      return rows[0]!.pending === 0;
    }, 20_000, 'the relay to publish');
  });
});
