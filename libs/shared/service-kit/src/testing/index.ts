/**
 * Test helpers. `npm test` (tools/dev-stack) starts the infrastructure once per run and passes
 * where it is through these variables; a project's own `vitest` run starts it the same way
 * through the shared global setup.
 */
import { Writable } from 'node:stream';

export type ServiceName = 'gateway' | 'auth' | 'chat' | 'admin' | 'worker';

/** The environment a service would get in this test run (its own database role, etc.). */
export function testEnv(service: ServiceName, overrides: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = process.env;
  const dbUrl = env[`VIVIER_TEST_DATABASE_URL_${service.toUpperCase()}`];
  return {
    NODE_ENV: 'test',
    LOG_LEVEL: env.VIVIER_TEST_LOG_LEVEL ?? 'silent',
    PORT: '0',
    ...(dbUrl ? { DATABASE_URL: dbUrl } : {}),
    REDIS_URL: env.REDIS_URL,
    REDIS_KEY_PREFIX: env.VIVIER_TEST_REDIS_PREFIX,
    KAFKA_BROKERS: env.KAFKA_BROKERS,
    KAFKA_PRODUCER_IDEMPOTENT: env.KAFKA_PRODUCER_IDEMPOTENT ?? 'false',
    KAFKA_LOG_LEVEL: 'error',
    // The dev broker waits a whole session timeout for members to rejoin on every rebalance.
    CONSUMER_SESSION_TIMEOUT_MS: '6000',
    S3_ENDPOINT: env.S3_ENDPOINT,
    S3_BUCKET: env.S3_BUCKET,
    ...overrides,
  };
}

/** The admin (superuser) URL of the test database, for assertions that bypass the services. */
export function testAdminDatabaseUrl(): string {
  const url = process.env.VIVIER_TEST_DATABASE_ADMIN_URL;
  if (!url) throw new Error('VIVIER_TEST_DATABASE_ADMIN_URL is not set: run the tests through `npm test` or vitest');
  return url;
}

/** Collects pino JSON lines written by an app under test. */
export class LogCapture extends Writable {
  readonly lines: Array<Record<string, unknown>> = [];
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim()) this.lines.push(JSON.parse(line) as Record<string, unknown>);
    }
    callback();
  }
  text(): string {
    return this.lines.map((l) => JSON.stringify(l)).join('\n');
  }
}
