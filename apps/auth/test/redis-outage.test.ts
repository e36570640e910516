import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORD, eventually, identityOf, randomIp, startAuth, uniqueEmail, type AuthHarness } from './helpers';

let auth: AuthHarness;

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

beforeAll(async () => {
  auth = await startAuth({ REDIS_URL: `redis://127.0.0.1:${await closedPort()}`, LOGIN_MAX_FAILURES_PER_ACCOUNT: '2', REGISTER_RATE_LIMIT_PER_IP: '2' });
}, 30_000);
afterAll(async () => {
  await auth.close();
});

describe('with Redis down', () => {
  it('still registers, signs in, refreshes and logs out (Redis is not critical to auth)', async () => {
    const ready = await auth.app.inject({ method: 'GET', url: '/ready' });
    expect(ready.statusCode).toBe(200);
    expect(ready.json()).toMatchObject({ status: 'degraded', checks: { redis: { status: 'down', critical: false } } });

    const email = uniqueEmail();
    const signedIn = await auth.register(email);
    expect((await auth.login(email, PASSWORD)).statusCode).toBe(200);
    const refreshed = await auth.call('POST', '/api/v1/auth/refresh', { body: { refreshToken: signedIn.refreshToken } });
    expect(refreshed.statusCode).toBe(200);
    const next = refreshed.json<{ refreshToken: string }>().refreshToken;
    expect((await auth.call('POST', '/api/v1/auth/logout', { body: { refreshToken: next } })).statusCode).toBe(204);
    // The database is the source of truth: the session is over whatever Redis missed...
    expect((await auth.call('POST', '/api/v1/auth/refresh', { body: { refreshToken: next } })).statusCode).toBe(401);
  });

  it('keeps throttling with in-process counters (per instance)', async () => {
    const email = uniqueEmail();
    await auth.register(email);
    expect((await auth.login(email, 'wrong guess one')).statusCode).toBe(401);
    expect((await auth.login(email, 'wrong guess two')).statusCode).toBe(401);
    const throttled = await auth.login(email, PASSWORD);
    expect(throttled.statusCode).toBe(429);
    expect(Number(throttled.headers['retry-after'])).toBeGreaterThan(0);

    const ip = randomIp();
    const register = () => auth.call('POST', '/api/v1/auth/register', { ip, body: { email: uniqueEmail(), password: PASSWORD } });
    expect((await register()).statusCode).toBe(201);
    expect((await register()).statusCode).toBe(201);
    expect((await register()).statusCode).toBe(429);
  });
});

/** A throwaway redis-server (the binary the machine runs Redis with) on a given port. */
async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  await eventually(
    () =>
      new Promise<boolean>((resolve) => {
        const socket = net.connect(port, '127.0.0.1', () => {
          socket.end();
          resolve(true);
        });
        socket.on('error', () => resolve(false));
      }),
    10_000,
    'redis-server to listen',
  );
  return child;
}

async function stopRedis(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

describe('when Redis comes back', () => {
  it('writes the revocations made during the outage, so the gateway learns them late rather than never', async () => {
    const port = await closedPort();
    let redis = await startRedis(port);
    const local = await startAuth({ REDIS_URL: `redis://127.0.0.1:${port}` });
    try {
      const signedIn = await local.register();
      const sid = identityOf(signedIn.accessToken).sid!;
      await stopRedis(redis);
      expect((await local.call('POST', '/api/v1/auth/logout', { body: { refreshToken: signedIn.refreshToken } })).statusCode).toBe(204);
      redis = await startRedis(port);
      await eventually(async () => (await local.app.redis.get(`auth:revoked-session:${sid}`).catch(() => null)) === '1', 20_000, 'the queued revocation');
      expect(await local.app.redis.ttl(`auth:revoked-session:${sid}`)).toBeGreaterThan(900);
    } finally {
      await local.close();
      await stopRedis(redis);
    }
  }, 60_000);
});
