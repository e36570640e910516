import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifyContext, type GatewayContext } from '@vivier/service-kit';
import {
  AuthStandIn,
  SECRET,
  bearer,
  cleanup,
  eventually,
  standIn,
  startGateway,
  type StandIn,
} from './support';

afterEach(cleanup);

let auth: AuthStandIn;
let services: StandIn;
let contexts: Array<GatewayContext | undefined>;

beforeEach(async () => {
  auth = await AuthStandIn.start();
  contexts = [];
  services = await standIn((req, res) => {
    contexts.push(verifyContext(req.headers, SECRET));
    res.end('{}');
  });
});

const gatewayEnv = (env: Record<string, string> = {}) => ({
  AUTH_URL: auth.url,
  CHAT_URL: services.url,
  ADMIN_URL: services.url,
  ...env,
});

describe('rate limits', () => {
  it('sends RateLimit-Policy and RateLimit (IETF draft, structured fields) on limited routes', async () => {
    const gw = await startGateway(gatewayEnv());
    const open = await startGateway({ AUTH_URL: services.url });
    const anonymous = await open.app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: {} });
    expect(anonymous.headers['ratelimit-policy']).toBe('"ip";q=120;w=60');
    expect(anonymous.headers.ratelimit).toBe('"ip";r=119;t=1');

    const token = await auth.sign({ sub: 'u-h1' });
    const first = await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(token) });
    expect(first.headers['ratelimit-policy']).toBe('"user";q=600;w=60, "ip";q=3000;w=60');
    expect(first.headers.ratelimit).toBe('"user";r=599;t=1, "ip";r=2999;t=1');
    const second = await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(token) });
    // One request later (the quota refills continuously: 600/min is one every 100 ms).
    expect(second.headers.ratelimit).toMatch(/^"user";r=59[89];t=1, "ip";r=299[89];t=1$/);
    // Not on the probes.
    expect(
      (await gw.app.inject({ method: 'GET', url: '/health' })).headers['ratelimit-policy'],
    ).toBeUndefined();
  });

  it('answers 429 rate_limited with Retry-After once a user is over quota, and other users go on', async () => {
    const gw = await startGateway(gatewayEnv({ RATE_LIMIT_PER_USER: '3', RATE_LIMIT_WINDOW_SECONDS: '60' }));
    const token = await auth.sign({ sub: 'u-busy' });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++)
      statuses.push(
        (await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(token) })).statusCode,
      );
    expect(statuses).toEqual([200, 200, 200]);
    const limited = await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(token) });
    expect(limited.statusCode).toBe(429);
    expect(limited.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(limited.json()).toMatchObject({ code: 'rate_limited', status: 429, violatedPolicies: ['user'] });
    expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(19);
    expect(Number(limited.headers['retry-after'])).toBeLessThanOrEqual(20);
    expect(limited.headers.ratelimit).toMatch(/^"user";r=0;t=\d+, "ip";r=\d+;t=\d+$/);
    expect(limited.headers['ratelimit-policy']).toBe('"user";q=3;w=60, "ip";q=3000;w=60');
    expect(services.requests).toHaveLength(3);
    // An API key of the same user shares the user's quota; another user is unaffected.
    auth.apiKeys.set('vk_same_user_key_00000000000001', { userId: 'u-busy', keyId: 'k', role: 'user' });
    expect(
      (
        await gw.app.inject({
          method: 'GET',
          url: '/api/v1/chats',
          headers: bearer('vk_same_user_key_00000000000001'),
        })
      ).statusCode,
    ).toBe(429);
    expect(
      (
        await gw.app.inject({
          method: 'GET',
          url: '/api/v1/chats',
          headers: bearer(await auth.sign({ sub: 'u-calm' })),
        })
      ).statusCode,
    ).toBe(200);
  });

  it('limits anonymous calls per client IP, separately from the looser authenticated per-IP cap', async () => {
    const open = await startGateway({
      AUTH_URL: services.url,
      CHAT_URL: services.url,
      RATE_LIMIT_PER_IP: '2',
    });
    const login = (remoteAddress = '198.51.100.7') =>
      open.app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: {}, remoteAddress });
    expect((await login()).statusCode).toBe(200);
    expect((await login()).statusCode).toBe(200);
    const limited = await login();
    expect(limited.statusCode).toBe(429);
    expect(limited.json()).toMatchObject({ violatedPolicies: ['ip'] });
    expect((await login('198.51.100.8')).statusCode).toBe(200);
  });

  it("rechecking a valid API key at auth costs its address nothing, and concurrent checks of one key share one call", async () => {
    const gw = await startGateway(gatewayEnv({ RATE_LIMIT_PER_IP: '2', API_KEY_CACHE_TTL_MS: '30' }));
    const key = 'vk_office_key_000000000000000001';
    auth.apiKeys.set(key, { userId: 'u-office', keyId: 'k-office', role: 'user' });
    const call = () => gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(key), remoteAddress: '198.51.100.20' });
    // The first check is charged to the address (a key nobody has shown valid yet), the rechecks are not.
    for (let i = 0; i < 5; i++) {
      expect((await call()).statusCode).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
    expect(auth.verifyRequests).toBeGreaterThanOrEqual(5);
    // Sign-ins from the same address keep the allowance the first check left.
    const login = await gw.app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: {}, remoteAddress: '198.51.100.20' });
    expect(login.statusCode).not.toBe(429);

    const fresh = 'vk_fresh_key_0000000000000000001';
    auth.apiKeys.set(fresh, { userId: 'u-fresh', keyId: 'k-fresh', role: 'user' });
    const before = auth.verifyRequests;
    const answers = await Promise.all(Array.from({ length: 10 }, () => gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(fresh), remoteAddress: '198.51.100.21' })));
    expect(answers.map((r) => r.statusCode)).toEqual(Array(10).fill(200));
    expect(auth.verifyRequests - before).toBe(1);
  });

  it('one address over its limit while checking a key does not refuse the others checking it at once', async () => {
    const gw = await startGateway(gatewayEnv({ RATE_LIMIT_PER_IP: '1' }));
    const key = 'vk_shared_key_00000000000000000001';
    auth.apiKeys.set(key, { userId: 'u-shared', keyId: 'k-shared', role: 'user' });
    // The first address has used its one anonymous request.
    expect((await gw.app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: {}, remoteAddress: '198.51.100.30' })).statusCode).not.toBe(429);
    const [limited, other] = await Promise.all([
      gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(key), remoteAddress: '198.51.100.30' }),
      gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(key), remoteAddress: '198.51.100.31' }),
    ]);
    expect(limited.statusCode).toBe(429);
    expect(other.statusCode).toBe(200);
  });

  it('keeps the key of an untrusted peer whatever X-Forwarded-For it sends (TRUST_PROXY empty)', async () => {
    const gw = await startGateway({ AUTH_URL: services.url, RATE_LIMIT_PER_IP: '3' }, { listen: true });
    const statuses: number[] = [];
    const remaining: string[] = [];
    for (let i = 1; i <= 4; i++) {
      const res = await fetch(`${gw.url}/api/v1/auth/login`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'x-forwarded-for': `203.0.113.${i}`,
          'x-real-ip': `203.0.113.${i}`,
        },
        body: '{}',
      });
      statuses.push(res.status);
      remaining.push(res.headers.get('ratelimit') ?? '');
      await res.arrayBuffer();
    }
    expect(statuses).toEqual([200, 200, 200, 429]);
    // GCRA: one request every 20 s refills; t is the time until the quota is whole again.
    expect(remaining.slice(0, 3)).toEqual(['"ip";r=2;t=20', '"ip";r=1;t=40', '"ip";r=0;t=60']);
    // The services are told the real peer, not the forged address.
    expect(contexts.filter(Boolean).map((c) => c?.ip)).toEqual(['127.0.0.1', '127.0.0.1', '127.0.0.1']);
    const forwarded = services.requests.filter((r) => r.url === '/api/v1/auth/login');
    expect(forwarded.map((r) => r.headers['x-forwarded-for'])).toEqual([
      '127.0.0.1',
      '127.0.0.1',
      '127.0.0.1',
    ]);
  });

  it('believes X-Forwarded-For from a configured proxy: the client address is the key', async () => {
    const gw = await startGateway(
      { AUTH_URL: services.url, RATE_LIMIT_PER_IP: '1', TRUST_PROXY: '127.0.0.1/32' },
      { listen: true },
    );
    const login = async (xff: string) => {
      const res = await fetch(`${gw.url}/api/v1/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-forwarded-for': xff },
        body: '{}',
      });
      await res.arrayBuffer();
      return res.status;
    };
    expect(await login('203.0.113.10')).toBe(200);
    expect(await login('203.0.113.10')).toBe(429);
    expect(await login('203.0.113.11')).toBe(200);
    // A client-supplied entry in front of the proxy's own does not move the key either.
    expect(await login('198.51.100.99, 203.0.113.11')).toBe(429);
    expect(contexts.filter(Boolean).map((c) => c?.ip)).toEqual(['203.0.113.10', '203.0.113.11']);
  });

  it('with Redis down: tokens still verify, limits hold per instance in memory, admin routes fail closed', async () => {
    const gw = await startGateway(
      gatewayEnv({ REDIS_URL: 'redis://127.0.0.1:1', RATE_LIMIT_PER_USER: '2', RATE_LIMIT_PER_IP: '2' }),
      { redisDown: true },
    );
    const token = await auth.sign({ sub: 'u-outage' });
    const first = await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(token) });
    expect(first.statusCode).toBe(200);
    expect(first.headers.ratelimit).toBe('"user";r=1;t=30, "ip";r=2999;t=1');
    expect(contexts[0]!.identity).toMatchObject({ sub: 'u-outage' });
    expect(
      (await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(token) })).statusCode,
    ).toBe(200);
    const limited = await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(token) });
    expect(limited.statusCode).toBe(429);
    expect(limited.headers['retry-after']).toBeDefined();
    // Auth keeps working: the public auth routes are forwarded (anonymous per-IP limit in memory).
    expect((await gw.app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: {} })).statusCode).toBe(
      200,
    );
    const admin = await gw.app.inject({
      method: 'GET',
      url: '/api/v1/admin/users',
      headers: bearer(await auth.sign({ role: 'admin' })),
    });
    expect(admin.statusCode).toBe(503);
    expect(admin.json()).toMatchObject({ code: 'revocation_check_unavailable' });
    expect(gw.logs.text()).toMatch(
      /Redis unavailable: rate limits are enforced per gateway instance in memory/,
    );
    const ready = await gw.app.inject({ method: 'GET', url: '/ready' });
    expect(ready.statusCode).toBe(200);
    expect(ready.json()).toMatchObject({ status: 'degraded', checks: { redis: { status: 'down' } } });
  });

  it('keeps applying revocations it learned once Redis goes away, and fails open for the rest', async () => {
    const gw = await startGateway(gatewayEnv());
    const revoked = await auth.sign({ sub: 'u-known', sid: 's-known' });
    await gw.redis.set('auth:revoked-session:s-known', '1');
    expect(
      (await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(revoked) })).statusCode,
    ).toBe(401);
    // Tokens-valid-after and iat are seconds to the millisecond: a token from earlier in the same
    // second is refused, and stays refused once Redis is away (what was learned keeps the fraction).
    const second = Math.floor(Date.now() / 1000) - 5;
    await gw.redis.set('auth:tokens-valid-after:u-logged-out', `${second}.500`);
    const older = await auth.sign({ sub: 'u-logged-out', iat: second + 0.3 });
    const newer = await auth.sign({ sub: 'u-logged-out', iat: second + 0.7 });
    const chats = async (token: string) => (await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(token) })).statusCode;
    expect(await chats(older)).toBe(401);
    expect(await chats(newer)).toBe(200);
    // A disabled user, and a revoked API key.
    await gw.redis.set('auth:user-disabled:u-disabled', '1');
    const disabled = await auth.sign({ sub: 'u-disabled', sid: 's-disabled' });
    expect(await chats(disabled)).toBe(401);
    const revokedKey = 'vk_revoked_while_redis_is_up_0001';
    auth.apiKeys.set(revokedKey, { userId: 'u-key-owner', keyId: 'k-revoked', role: 'user' });
    await gw.redis.set('auth:revoked-api-key:k-revoked', '1');
    const byKey = async () => (await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(revokedKey) })).statusCode;
    expect(await byKey()).toBe(401);
    gw.app.redis.disconnect();
    await eventually(() => gw.app.redis.status !== 'ready');
    expect(
      (await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(revoked) })).statusCode,
    ).toBe(401);
    expect(await chats(older)).toBe(401);
    expect(await chats(newer)).toBe(200);
    expect(await chats(disabled)).toBe(401);
    expect(await byKey()).toBe(401);
    const other = await gw.app.inject({
      method: 'GET',
      url: '/api/v1/chats',
      headers: bearer(await auth.sign({ sub: 'u-other' })),
    });
    expect(other.statusCode).toBe(200);
  });
});
