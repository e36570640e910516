import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { ROOT } from '@vivier/dev-stack';

/** What the benchmarks that run services as processes give every one of them. */

/** Fixed across runs but not a pattern: chat and admin refuse a key with few distinct bytes (and the development default in production). */
export const BENCH_PROVIDER_KEY_ENCRYPTION_KEY = createHash('sha256').update('vivier-bench-provider-keys').digest('base64');

/**
 * Production mode on the run's infrastructure and dev broker, with the secrets production
 * insists on (it refuses the development defaults) and the run's Redis prefix.
 */
export function serviceEnv(infraEnv: Record<string, string>, kafkaBootstrap: string[]): NodeJS.ProcessEnv {
  return {
    ...process.env,
    ...infraEnv,
    NODE_ENV: 'production',
    LOG_LEVEL: 'warn',
    KAFKA_BROKERS: kafkaBootstrap.join(','),
    KAFKA_PRODUCER_IDEMPOTENT: 'false',
    INTERNAL_IDENTITY_SECRET: 'bench-internal-identity-secret-0123456789',
    AUTH_KEY_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64'),
    PROVIDER_KEY_ENCRYPTION_KEY: BENCH_PROVIDER_KEY_ENCRYPTION_KEY,
    REDIS_KEY_PREFIX: infraEnv.VIVIER_TEST_REDIS_PREFIX,
  };
}

/** A gateway in front of the benchmark's auth and chat, rate limiting on with limits out of reach. */
export function gatewayEnv(base: NodeJS.ProcessEnv, authPort: number, chatPort: number): NodeJS.ProcessEnv {
  return {
    ...base,
    AUTH_URL: `http://127.0.0.1:${authPort}`,
    CHAT_URL: `http://127.0.0.1:${chatPort}`,
    ADMIN_URL: 'http://127.0.0.1:9',
    RATE_LIMIT_PER_USER: '100000000',
    RATE_LIMIT_PER_IP: '100000000',
    RATE_LIMIT_PER_IP_AUTHENTICATED: '100000000',
  };
}

/** Starts a helper process; resolves once a line of its output matches `ready` (30 s at most). */
export function startChild(command: string, args: string[], env: NodeJS.ProcessEnv, ready: RegExp): Promise<{ proc: ChildProcess; match: RegExpExecArray }> {
  const proc = spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args.join(' ')} did not start`)), 30_000);
    for (const stream of [proc.stdout!, proc.stderr!]) {
      createInterface({ input: stream }).on('line', (line) => {
        const match = ready.exec(line);
        if (match) {
          clearTimeout(timer);
          resolve({ proc, match });
        }
      });
    }
  });
}

/** The provider simulator (zero latency, every vendor's protocol) as its own process. */
export async function startSimulator(): Promise<{ proc: ChildProcess; url: string }> {
  const { proc, match } = await startChild(process.execPath, ['--import', 'tsx', path.join(ROOT, 'tools/provider-sim/src/cli.ts'), '--port', '0', '--log-size', '1'], process.env, /^PROVIDER_SIM_URL=(\S+)/);
  return { proc, url: match[1]! };
}

/** Registers a new user through the gateway at `origin` and creates an API key for them. */
export async function newApiKey(origin: string, emailPrefix: string): Promise<{ apiKey: string; userId: string }> {
  const registered = await fetch(`${origin}/api/v1/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: `${emailPrefix}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}@example.test`, password: 'a benchmark password 42' }),
  });
  const { accessToken, user } = (await registered.json()) as { accessToken: string; user: { id: string } };
  const keyRes = await fetch(`${origin}/api/v1/auth/api-keys`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${accessToken}` },
    body: JSON.stringify({ name: 'bench' }),
  });
  return { apiKey: ((await keyRes.json()) as { key: string }).key, userId: user.id };
}
