import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKafka, startServiceProcess, stopProcess, waitReady, type ServiceProcess, freePort } from '@vivier/dev-stack';
import { isolatedDatabase } from '@vivier/dev-stack/test-infra';
import { testEnv } from '@vivier/service-kit/testing';
import type { DevKafka } from '@vivier/dev-kafka';

// One request, one id: the gateway's log lines and the auth service's carry the same request id,
// with both running as their own processes, as in production.
describe('request id across gateway and service processes', () => {
  const lines: Record<string, Array<Record<string, unknown>>> = { gateway: [], auth: [] };
  const procs: ServiceProcess[] = [];
  const collect = (name: string) => (line: string) => {
    try {
      lines[name]!.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // not a log line
    }
  };
  let gatewayUrl = '';

  let dev: DevKafka;
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;
  beforeAll(async () => {
    // Its own broker, so these processes never join the consumer groups of other test files, and
    // its own database, so auth's relay never takes over the run's auth outbox for that broker.
    dev = await startKafka();
    database = await isolatedDatabase('request_id');
    const kafkaEnv = { KAFKA_BROKERS: dev.bootstrap.join(','), DATABASE_URL: database.serviceUrls.auth };
    const authPort = await freePort();
    const auth = startServiceProcess('auth', { port: authPort, env: { ...process.env, ...testEnv('auth', { LOG_LEVEL: 'info', ...kafkaEnv }) }, onLine: collect('auth') });
    procs.push(auth);
    await waitReady(auth);
    const gatewayPort = await freePort();
    const gateway = startServiceProcess('gateway', {
      port: gatewayPort,
      env: { ...process.env, ...testEnv('gateway', { LOG_LEVEL: 'info', AUTH_URL: `http://127.0.0.1:${authPort}`, ...kafkaEnv }) },
      onLine: collect('gateway'),
    });
    procs.push(gateway);
    await waitReady(gateway);
    gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
  });
  afterAll(async () => {
    for (const p of procs.reverse()) await stopProcess(p);
    await dev?.stop();
    await database?.drop();
  });

  it('keeps a client request id through both services', async () => {
    // A public route answered by auth (no credentials needed at the gateway).
    const res = await fetch(`${gatewayUrl}/.well-known/jwks.json`, { headers: { 'x-request-id': 'trace-me-42' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('trace-me-42');
    expect(((await res.json()) as { keys: unknown[] }).keys.length).toBeGreaterThan(0);
    await expect.poll(() => lines.auth!.some((l) => l.requestId === 'trace-me-42'), { timeout: 10_000 }).toBe(true);
    // Each process logs the request when it completes; the lines reach the test as they are read.
    await expect.poll(() => lines.gateway!.some((l) => l.requestId === 'trace-me-42'), { timeout: 10_000 }).toBe(true);
  });

  it('generates one id when the client sends none, and the service logs that id', async () => {
    const res = await fetch(`${gatewayUrl}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'not-an-email' }),
    });
    expect(res.status).toBe(400);
    const id = res.headers.get('x-request-id')!;
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    await expect.poll(() => lines.auth!.some((l) => l.requestId === id), { timeout: 10_000 }).toBe(true);
    await expect.poll(() => lines.gateway!.some((l) => l.requestId === id), { timeout: 10_000 }).toBe(true);
  });
});
