import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { base32Decode, hotp } from '../src/modules/mfa/totp.service';
import { PASSWORD, eventually, freshStep, identityOf, outboxEvents, sleep, startAuth, uniqueEmail, type AuthHarness, type SignedIn } from './helpers';

let auth: AuthHarness;
beforeAll(async () => {
  auth = await startAuth({ REFRESH_TOKEN_REUSE_GRACE_MS: '200' });
});
afterAll(async () => {
  await auth.close();
});

const IP = '203.0.113.7';

/** The audit events written for requests from `ip`, in order. */
async function eventsFromIp(ip: string): Promise<Array<{ type: string; data: Record<string, unknown> }>> {
  const { rows } = await auth.pg.query<{ envelope: { type: string; data: Record<string, unknown> } }>(
    "select envelope from auth.outbox where envelope->'data'->'actor'->>'ip' = $1 order by id",
    [ip],
  );
  return rows.map((r) => r.envelope);
}
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
      'vivier.auth.session.refreshed.v1',
      'vivier.auth.session.revoked.v1',
    ]);
    const [registeredEvent, , failed, loggedIn, refreshed, revoked] = events;
    expect(registeredEvent!.data).toMatchObject({ userId, email, name: 'Ada', role: 'user', method: 'password', actor: { ip: IP, userAgent: UA } });
    expect(failed!.data).toMatchObject({ email, userId, method: 'password', reason: 'invalid_password', actor: { ip: IP, userAgent: UA } });
    expect(loggedIn!.data).toMatchObject({ userId, sessionId: identityOf(login.accessToken).sid, method: 'password', actor: { userId, ip: IP, userAgent: UA } });
    expect(refreshed!.data).toEqual({ userId, sessionId: identityOf(login.accessToken).sid, rotated: true, actor: { userId, ip: IP, userAgent: UA } });
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

  it('records every refused refresh, registration, password change and MFA change, and a refresh in the grace period — with no secret', async () => {
    const ip = '203.0.113.88';
    const at = { ip, userAgent: UA };
    const byIp = () => eventsFromIp(ip);
    const email = uniqueEmail('refused');
    const signedIn = (await auth.call('POST', '/api/v1/auth/register', { ...at, body: { email, password: PASSWORD } })).json<SignedIn>();
    const userId = signedIn.user.id;
    const before = (await byIp()).length;

    const garbage = 'vrt_not-a-token-at-all';
    expect((await auth.call('POST', '/api/v1/auth/refresh', { ...at, body: { refreshToken: garbage } })).statusCode).toBe(401);
    const rotated = (await auth.call('POST', '/api/v1/auth/refresh', { ...at, body: { refreshToken: signedIn.refreshToken } })).json<SignedIn>();
    // Again at once, within the grace period (a lost response): the same successor, audited as not rotated.
    const again = await auth.call('POST', '/api/v1/auth/refresh', { ...at, body: { refreshToken: signedIn.refreshToken } });
    expect(again.json<SignedIn>().refreshToken).toBe(rotated.refreshToken);
    await auth.call('POST', '/api/v1/auth/logout', { ...at, body: { refreshToken: rotated.refreshToken } });
    expect((await auth.call('POST', '/api/v1/auth/refresh', { ...at, body: { refreshToken: rotated.refreshToken } })).json()).toMatchObject({ code: 'invalid_token' });

    expect((await auth.call('POST', '/api/v1/auth/register', { ...at, body: { email, password: 'another fine passphrase 9' } })).statusCode).toBe(409);
    const other = uniqueEmail('weak');
    expect((await auth.call('POST', '/api/v1/auth/register', { ...at, body: { email: other, password: other } })).json()).toMatchObject({ code: 'weak_password' });

    const second = (await auth.call('POST', '/api/v1/auth/login', { ...at, body: { email, password: PASSWORD } })).json<SignedIn>();
    const secondIdentity = identityOf(second.accessToken);
    const wrongCurrent = 'this is not the password';
    expect((await auth.call('POST', '/api/v1/auth/password', { ...at, identity: secondIdentity, body: { currentPassword: wrongCurrent, newPassword: 'a brand new passphrase 77' } })).statusCode).toBe(400);
    expect((await auth.call('POST', '/api/v1/auth/mfa/totp/setup', { ...at, identity: secondIdentity })).statusCode).toBe(200);
    expect((await auth.call('POST', '/api/v1/auth/mfa/totp/enable', { ...at, identity: secondIdentity, body: { code: '000000' } })).json()).toMatchObject({ code: 'invalid_mfa_code' });
    expect((await auth.call('POST', '/api/v1/auth/mfa/totp/disable', { ...at, identity: secondIdentity, body: { code: '000000' } })).json()).toMatchObject({ code: 'mfa_not_enabled' });

    const events = (await byIp()).slice(before);
    const summary = events.map((e) =>
      e.type === 'vivier.auth.operation.failed.v1'
        ? [e.type, e.data.operation, e.data.reason, e.data.userId ?? e.data.email ?? null]
        : e.type === 'vivier.auth.session.refreshed.v1'
          ? [e.type, e.data.rotated]
          : [e.type],
    );
    expect(summary).toEqual([
      ['vivier.auth.operation.failed.v1', 'refresh', 'invalid_token', null],
      ['vivier.auth.session.refreshed.v1', true],
      ['vivier.auth.session.refreshed.v1', false],
      ['vivier.auth.session.revoked.v1'],
      ['vivier.auth.operation.failed.v1', 'refresh', 'invalid_token', userId],
      ['vivier.auth.operation.failed.v1', 'register', 'email_taken', email],
      ['vivier.auth.operation.failed.v1', 'register', 'weak_password', other],
      ['vivier.auth.user.logged_in.v1'],
      ['vivier.auth.operation.failed.v1', 'password_change', 'invalid_password', userId],
      // Setup changes nothing that is audited; a disable with MFA off is a client mistake, not a refused code.
      ['vivier.auth.operation.failed.v1', 'mfa_enable', 'invalid_mfa_code', userId],
    ]);
    for (const e of events) expect(e.data.actor).toMatchObject({ ip, userAgent: UA });
    expect(events.find((e) => e.data.operation === 'password_change')!.data.actor).toMatchObject({ userId });
    const everything = JSON.stringify(events);
    for (const secret of [PASSWORD, wrongCurrent, garbage, signedIn.refreshToken, signedIn.accessToken, rotated.refreshToken, second.refreshToken, second.accessToken]) {
      expect(everything).not.toContain(secret);
    }
    expect(everything).not.toMatch(/vrt_|password"\s*:|argon2|otpauth/);
  });

  it('records MFA on and off, sign-ins refused for the second factor, a refused code to turn it off, and a password change', async () => {
    const ip = '203.0.113.99';
    const at = { ip, userAgent: UA };
    const email = uniqueEmail('mfa-audit');
    const signedIn = (await auth.call('POST', '/api/v1/auth/register', { ...at, body: { email, password: PASSWORD } })).json<SignedIn>();
    const userId = signedIn.user.id;
    const identity = identityOf(signedIn.accessToken);
    const { secret } = (await auth.call('POST', '/api/v1/auth/mfa/totp/setup', { ...at, identity })).json<{ secret: string }>();
    const step = await freshStep();
    const enabled = await auth.call('POST', '/api/v1/auth/mfa/totp/enable', { ...at, identity, body: { code: hotp(base32Decode(secret), step) } });
    expect(enabled.statusCode).toBe(200);
    const [first, second] = enabled.json<{ recoveryCodes: string[] }>().recoveryCodes;
    expect((await auth.call('POST', '/api/v1/auth/login', { ...at, body: { email, password: PASSWORD } })).json()).toMatchObject({ code: 'mfa_required' });
    expect((await auth.call('POST', '/api/v1/auth/login', { ...at, body: { email, password: PASSWORD, mfaCode: '000000' } })).json()).toMatchObject({ code: 'invalid_mfa_code' });
    const viaRecovery = (await auth.call('POST', '/api/v1/auth/login', { ...at, body: { email, password: PASSWORD, mfaCode: first } })).json<SignedIn>();
    const session = identityOf(viaRecovery.accessToken);
    expect((await auth.call('POST', '/api/v1/auth/mfa/totp/disable', { ...at, identity: session, body: { code: '000000' } })).json()).toMatchObject({ code: 'invalid_mfa_code' });
    expect((await auth.call('POST', '/api/v1/auth/mfa/totp/disable', { ...at, identity: session, body: { code: second } })).statusCode).toBe(204);
    const newPassword = 'a brand new passphrase 78';
    expect((await auth.call('POST', '/api/v1/auth/password', { ...at, identity: session, body: { currentPassword: PASSWORD, newPassword } })).statusCode).toBe(204);

    const events = (await outboxEvents(auth.pg, userId)).filter((e) => e.type !== 'vivier.auth.session.revoked.v1');
    expect(events.map((e) => [e.type, e.data.reason ?? e.data.operation ?? e.data.mfaMethod ?? null])).toEqual([
      ['vivier.auth.user.registered.v1', null],
      ['vivier.auth.user.logged_in.v1', null],
      ['vivier.auth.mfa.enabled.v1', null],
      ['vivier.auth.login.failed.v1', 'mfa_required'],
      ['vivier.auth.login.failed.v1', 'invalid_mfa_code'],
      ['vivier.auth.user.logged_in.v1', 'recovery_code'],
      ['vivier.auth.operation.failed.v1', 'invalid_mfa_code'],
      ['vivier.auth.mfa.disabled.v1', null],
      ['vivier.auth.user.updated.v1', null],
    ]);
    expect(events.find((e) => e.type === 'vivier.auth.operation.failed.v1')!.data).toMatchObject({ operation: 'mfa_disable', userId, actor: { userId, ip, userAgent: UA } });
    expect(events.at(-1)!.data).toMatchObject({ changes: { passwordChanged: true }, actor: { userId, ip, userAgent: UA } });
    for (const e of events) expect(e.data.actor).toMatchObject({ ip, userAgent: UA });
    const everything = JSON.stringify(events.map((e) => e.raw));
    for (const secretValue of [PASSWORD, newPassword, secret, first!, second!]) expect(everything).not.toContain(secretValue);
  });

  it('records a sign-in refused because the account changed while it was checked (disabled meanwhile)', async () => {
    const email = uniqueEmail('raced');
    const userId = (await auth.register(email)).user.id;
    // The row is held, as a change being committed holds it; the sign-in checks the password, then waits on it.
    const holder = await auth.pg.connect();
    try {
      await holder.query('begin');
      await holder.query('select 1 from auth.users where id = $1 for update', [userId]);
      const login = auth.call('POST', '/api/v1/auth/login', { ip: IP, userAgent: UA, body: { email, password: PASSWORD } });
      await eventually(async () => (await auth.pg.query(`select 1 from pg_stat_activity where wait_event_type = 'Lock' and query like '%auth%users%'`)).rows.length > 0, 10_000);
      await holder.query('update auth.users set disabled_at = now() where id = $1', [userId]);
      await holder.query('commit');
      expect((await login).json()).toMatchObject({ code: 'account_disabled' });
    } finally {
      await holder.query('rollback').catch(() => undefined);
      holder.release();
    }
    const failed = (await outboxEvents(auth.pg, userId)).filter((e) => e.type === 'vivier.auth.login.failed.v1');
    expect(failed.map((e) => (e.data as { reason: string }).reason)).toEqual(['account_disabled']);
  });

  it('records API key changes too, without the key', async () => {
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

  it('records why each session ended (one revoked, password change, MFA on and off, log out everywhere), with who and from where', async () => {
    const ip = '203.0.113.120';
    const at = { ip, userAgent: UA };
    const email = uniqueEmail('revocations');
    const registered = (await auth.call('POST', '/api/v1/auth/register', { ...at, body: { email, password: PASSWORD } })).json<SignedIn>();
    const userId = registered.user.id;
    const login = async (body: Record<string, unknown> = {}) =>
      identityOf((await auth.call('POST', '/api/v1/auth/login', { ...at, body: { email, password: PASSWORD, ...body } })).json<SignedIn>().accessToken);
    const s0 = identityOf(registered.accessToken);
    const [s1, s2, s3] = [await login(), await login(), await login()];

    expect((await auth.call('DELETE', `/api/v1/auth/sessions/${s1.sid}`, { ...at, identity: s0 })).statusCode).toBe(204);
    expect((await auth.call('POST', '/api/v1/auth/password', { ...at, identity: s0, body: { currentPassword: PASSWORD, newPassword: 'a passphrase for revocations 5' } })).statusCode).toBe(204);
    const password = 'a passphrase for revocations 5';
    const s4 = identityOf((await auth.call('POST', '/api/v1/auth/login', { ...at, body: { email, password } })).json<SignedIn>().accessToken);
    const { secret } = (await auth.call('POST', '/api/v1/auth/mfa/totp/setup', { ...at, identity: s4 })).json<{ secret: string }>();
    const enabled = await auth.call('POST', '/api/v1/auth/mfa/totp/enable', { ...at, identity: s4, body: { code: hotp(base32Decode(secret), await freshStep()) } });
    expect(enabled.statusCode).toBe(200);
    const [first, second] = enabled.json<{ recoveryCodes: string[] }>().recoveryCodes;
    const s5 = identityOf((await auth.call('POST', '/api/v1/auth/login', { ...at, body: { email, password, mfaCode: first } })).json<SignedIn>().accessToken);
    expect((await auth.call('POST', '/api/v1/auth/mfa/totp/disable', { ...at, identity: s4, body: { code: second } })).statusCode).toBe(204);
    expect((await auth.call('POST', '/api/v1/auth/logout-all', { ...at, identity: s4 })).statusCode).toBe(204);

    const revoked = (await outboxEvents(auth.pg, userId)).filter((e) => e.type === 'vivier.auth.session.revoked.v1');
    expect(revoked.map((e) => [e.data.reason, [...(e.data.sessionIds as string[])].sort()])).toEqual([
      ['revoked_by_user', [s1.sid]],
      // Every other session of the account: the one that changed the password stays.
      ['password_changed', [s2.sid, s3.sid].sort()],
      ['revoked_by_user', [s0.sid]], // turning MFA on ends the sessions signed in without it
      ['revoked_by_user', [s5.sid]], // and turning it off, the others too
      ['logout_all', [s4.sid]],
    ]);
    for (const e of revoked) expect(e.data).toMatchObject({ userId, actor: { userId, ip, userAgent: UA } });
  });

  it('records a sign-in refused because the account is throttled, with the email and no password', async () => {
    const ip = '203.0.113.121';
    const email = uniqueEmail('throttled');
    await auth.register(email);
    const wrong = 'a wrong password, again';
    const statuses: number[] = [];
    for (let i = 0; i < 7; i++) statuses.push((await auth.call('POST', '/api/v1/auth/login', { ip, userAgent: UA, body: { email, password: wrong } })).statusCode);
    // Five failures per account and window (LOGIN_MAX_FAILURES_PER_ACCOUNT), then throttled.
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429]);
    const failed = (await eventsFromIp(ip)).filter((e) => e.type === 'vivier.auth.login.failed.v1');
    expect(failed.map((e) => e.data.reason)).toEqual(['invalid_password', 'invalid_password', 'invalid_password', 'invalid_password', 'invalid_password', 'throttled', 'throttled']);
    for (const e of failed.slice(5)) expect(e.data).toMatchObject({ email, method: 'password', actor: { ip, userAgent: UA } });
    expect(JSON.stringify(failed)).not.toContain(wrong);
  });

  it('hands the events to Kafka through the relay', async () => {
    const signedIn = await auth.register();
    await eventually(async () => {
      const { rows } = await auth.pg.query<{ pending: number }>('select count(*) filter (where published_at is null)::int as pending from auth.outbox where key = $1', [signedIn.user.id]);
      return rows[0]!.pending === 0;
    }, 20_000, 'the relay to publish');
  });
});
