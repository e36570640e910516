import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuthStandIn, bearer, cleanup, eventually, standIn, startGateway, type Gateway, type StandIn } from './support';

afterEach(cleanup);

let auth: AuthStandIn;
let services: StandIn;

beforeEach(async () => {
  auth = await AuthStandIn.start();
  services = await standIn((_req, res) => res.end('{}'));
});

/** A gateway whose revocation subscription is live, so it may lease. */
async function leasingGateway(env: Record<string, string> = {}): Promise<Gateway> {
  const gw = await startGateway({ AUTH_URL: auth.url, CHAT_URL: services.url, ADMIN_URL: services.url, ...env });
  await eventually(() => gw.app.edgeAuth.checker.leasing);
  return gw;
}

const remainingOf = (header: unknown, policy: string) =>
  Number(new RegExp(`"${policy}";r=(\\d+)`).exec(String(header))?.[1] ?? NaN);

/** Auth's revocation, as its notifier writes it: the fact and the message in one transaction. */
async function revokeSession(gw: Gateway, userId: string, sid: string): Promise<void> {
  await gw.redis
    .multi()
    .set(`auth:revoked-session:${sid}`, '1', 'EX', 900)
    .publish(`${gw.prefix}auth:revocations`, JSON.stringify({ userId, sid }))
    .exec();
}

describe('edge leases (rate limits and revocation facts without a Redis round trip per request)', () => {
  it('lets a caller far from their limits through on leases: a few scripts for 100 requests, RateLimit counting one by one', async () => {
    // One request every 86.4 s refills: the counts below cannot move by refill within the test.
    const gw = await leasingGateway({ RATE_LIMIT_WINDOW_SECONDS: '86400', RATE_LIMIT_PER_USER: '1000' });
    const stats = gw.app.edgeAuth.checker.stats;
    const token = await auth.sign({ sub: 'u-l1', sid: 's-l1' });
    const scriptsBefore = stats.scripts;
    const remaining: number[] = [];
    for (let i = 0; i < 100; i++) {
      const res = await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(token) });
      expect(res.statusCode).toBe(200);
      remaining.push(remainingOf(res.headers.ratelimit, 'user'));
    }
    // Leases of 1, 2, 4, 8, 16, 32, 64 requests: seven scripts (one more if the machine is slow enough for one to expire).
    expect(stats.scripts - scriptsBefore).toBeLessThanOrEqual(8);
    expect(stats.leased).toBeGreaterThanOrEqual(92);
    // What the caller may still do, counted per request: what Redis has left plus what this instance holds.
    expect(remaining).toEqual(Array.from({ length: 100 }, (_, i) => 999 - i));
  });

  it('has concurrent requests of one caller wait for the grant on its way instead of each asking Redis', async () => {
    const gw = await leasingGateway({ RATE_LIMIT_WINDOW_SECONDS: '86400', RATE_LIMIT_PER_USER: '100000' });
    const stats = gw.app.edgeAuth.checker.stats;
    const token = await auth.sign({ sub: 'u-l8', sid: 's-l8' });
    const get = () => gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(token) });
    expect((await get()).statusCode).toBe(200);
    const scriptsBefore = stats.scripts;
    const statuses = await Promise.all(Array.from({ length: 200 }, get));
    expect(statuses.every((res) => res.statusCode === 200)).toBe(true);
    // Grants of 2, 4, ... 64, then 64 again: about eight scripts, not one per request.
    expect(stats.scripts - scriptsBefore).toBeLessThanOrEqual(12);
  });

  it("ends a user's leases when auth publishes a revocation: the next request is refused", async () => {
    const gw = await leasingGateway({ EDGE_LEASE_MS: '5000' });
    const token = await auth.sign({ sub: 'u-l2', sid: 's-l2' });
    const other = await auth.sign({ sub: 'u-l2', sid: 's-l2b' });
    const get = (credential: string) => gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(credential) });
    // Leases of 1 to 32, then the 64th request takes one of 64: 63 requests held, more than the polling below makes.
    for (let i = 0; i < 64; i++) expect((await get(token)).statusCode).toBe(200);
    const leasedBefore = gw.app.edgeAuth.checker.stats.leased;
    expect((await get(token)).statusCode).toBe(200);
    expect(gw.app.edgeAuth.checker.stats.leased).toBe(leasedBefore + 1);
    await revokeSession(gw, 'u-l2', 's-l2');
    // The lease alone would let the next 62 through; the message ends it.
    let served = 0;
    await eventually(async () => {
      const res = await get(token);
      if (res.statusCode === 200) served += 1;
      return res.statusCode === 401;
    }, 1000);
    expect(served).toBeLessThan(40);
    expect((await get(token)).json()).toMatchObject({ code: 'invalid_token' });
    // The user's other session is asked about in Redis again, and is fine.
    expect((await get(other)).statusCode).toBe(200);
  });

  it('refuses within EDGE_LEASE_MS a revocation whose message never arrived', async () => {
    const gw = await leasingGateway({ EDGE_LEASE_MS: '300' });
    const token = await auth.sign({ sub: 'u-l3', sid: 's-l3' });
    const get = () => gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(token) });
    // Leases of 1 to 32, then the 64th request takes one of 64: 63 requests held.
    for (let i = 0; i < 64; i++) expect((await get()).statusCode).toBe(200);
    await gw.redis.set('auth:revoked-session:s-l3', '1', 'EX', 900); // no message
    const written = Date.now();
    // One request per 50 ms: the lease alone would last 3 s; its lifetime ends it in 300 ms.
    let res = await get();
    while (res.statusCode === 200) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      res = await get();
    }
    expect(res.statusCode).toBe(401);
    expect(Date.now() - written).toBeLessThan(1000);
  });

  it('ends every lease when the revocation subscription drops, and takes none until it is back', async () => {
    const gw = await leasingGateway({ EDGE_LEASE_MS: '5000' });
    const checker = gw.app.edgeAuth.checker;
    const token = await auth.sign({ sub: 'u-l4', sid: 's-l4' });
    const get = () => gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(token) });
    for (let i = 0; i < 4; i++) expect((await get()).statusCode).toBe(200); // the fourth leases four
    // Cut the gateway's subscriber off, as a network break would.
    const clients = String(await gw.redis.client('LIST'));
    const name = `gateway-revocations@${gw.prefix}auth:revocations`;
    const id = new RegExp(`id=(\\d+) [^\\n]* name=${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} `).exec(clients)?.[1];
    expect(id).toBeDefined();
    await gw.redis.client('KILL', 'ID', id!);
    await eventually(() => checker.stats.feedLosses === 1);
    // A revocation published during the break is lost: only its fact is in Redis.
    await gw.redis.set('auth:revoked-session:s-l4', '1', 'EX', 900);
    // The subscriber comes back on its own, and leasing with it; the lease held before the break (three requests) is gone.
    await eventually(() => checker.leasing);
    expect((await get()).statusCode).toBe(401);
  });

  it('gives the unused requests of an expired lease back to the quota', async () => {
    // One request every 86.4 s: the timestamp in Redis shows exactly how many were taken.
    const gw = await leasingGateway({ EDGE_LEASE_MS: '200', RATE_LIMIT_WINDOW_SECONDS: '86400', RATE_LIMIT_PER_USER: '1000' });
    const token = await auth.sign({ sub: 'u-l5', sid: 's-l5' });
    for (let i = 0; i < 10; i++) {
      expect((await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(token) })).statusCode).toBe(200);
    }
    // Leases of 1, 2, 4 and 8 took 15 requests for 10; after expiry the bucket holds 10.
    const ahead = async () => Number(await gw.redis.get('gateway:rl:user:u-l5')) - Date.now();
    await eventually(async () => (await ahead()) < 10.5 * 86_400, 3000);
    expect(await ahead()).toBeGreaterThan(9.5 * 86_400); // 10 emission intervals, less the few seconds since
  });

  it('never leases near the limit: two instances let a user through exactly up to the quota', async () => {
    const first = await leasingGateway({ RATE_LIMIT_PER_USER: '10' });
    const second = await leasingGateway({ RATE_LIMIT_PER_USER: '10', REDIS_KEY_PREFIX: first.prefix });
    const token = await auth.sign({ sub: 'u-l6', sid: 's-l6' });
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) {
      const gw = i % 2 === 0 ? first : second;
      statuses.push((await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(token) })).statusCode);
    }
    expect(statuses).toEqual([...Array<number>(10).fill(200), 429, 429]);
  });

  it('asks Redis for every admin request', async () => {
    const gw = await leasingGateway();
    const token = await auth.sign({ sub: 'u-l7', sid: 's-l7', role: 'admin' });
    const scriptsBefore = gw.app.edgeAuth.checker.stats.scripts;
    for (let i = 0; i < 6; i++) {
      expect((await gw.app.inject({ method: 'GET', url: '/api/v1/admin/users', headers: bearer(token) })).statusCode).toBe(200);
    }
    expect(gw.app.edgeAuth.checker.stats.scripts - scriptsBefore).toBe(6);
  });
});
