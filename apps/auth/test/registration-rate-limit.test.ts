import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORD, randomIp, startAuth, uniqueEmail, type AuthHarness } from './helpers';

let auth: AuthHarness;
beforeAll(async () => {
  auth = await startAuth({ REGISTER_RATE_LIMIT_PER_IP: '3', REGISTER_RATE_LIMIT_WINDOW_SECONDS: '600' });
});
afterAll(async () => {
  await auth.close();
});

describe('registration rate limit', () => {
  it('allows N registrations per client IP per window, then 429 with Retry-After; other IPs are unaffected', async () => {
    const ip = randomIp();
    const register = (from: string, email = uniqueEmail()) => auth.call('POST', '/api/v1/auth/register', { ip: from, body: { email, password: PASSWORD } });
    for (let i = 0; i < 3; i += 1) expect((await register(ip)).statusCode).toBe(201);
    // A taken email counts too: the limit is what makes probing for accounts with 409 slow.
    const refused = uniqueEmail('refused');
    const limited = await register(ip, refused);
    expect(limited.statusCode).toBe(429);
    expect(limited.json()).toMatchObject({ code: 'rate_limited' });
    // The refusal is an audit event (QUALITY-BAR 10), keyed by the email that was tried.
    const { rows } = await auth.pg.query<{ envelope: { type: string; data: Record<string, unknown> } }>('select envelope from auth.outbox where key = $1', [refused]);
    expect(rows.map((r) => [r.envelope.type, r.envelope.data.operation, r.envelope.data.reason, r.envelope.data.actor])).toEqual([
      ['vivier.auth.operation.failed.v1', 'register', 'throttled', { ip, userAgent: 'vitest/auth' }],
    ]);
    const retryAfter = Number(limited.headers['retry-after']);
    expect(retryAfter).toBeGreaterThan(500);
    expect(retryAfter).toBeLessThanOrEqual(600);
    expect((await register(randomIp())).statusCode).toBe(201);
  });

  it('counts IPv6 clients by their /64: rotating addresses within it does not reset the limit', async () => {
    const prefix = `2001:db8:${Math.floor(Math.random() * 0xffff).toString(16)}:1`;
    const register = (n: number) => auth.call('POST', '/api/v1/auth/register', { ip: `${prefix}::${n.toString(16)}`, body: { email: uniqueEmail(), password: PASSWORD } });
    for (let i = 1; i <= 3; i += 1) expect((await register(i)).statusCode).toBe(201);
    expect((await register(4)).statusCode).toBe(429);
    // Another /64 is another client.
    const other = await auth.call('POST', '/api/v1/auth/register', { ip: `2001:db8:${Math.floor(Math.random() * 0xffff).toString(16)}:2::1`, body: { email: uniqueEmail(), password: PASSWORD } });
    expect(other.statusCode).toBe(201);
  });
});
