import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { expect } from 'vitest';
import { ROOT, freePort } from '@vivier/dev-stack';

// `npm start`'s program (tools/dev-stack/src/cli.ts start) as a test starts it: on free ports,
// against this test run's database, with its own dev broker and Redis keys.

export async function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

export interface Stack {
  child: ChildProcess;
  /** SIGKILLs the CLI and every service it started (its process group): for afterEach. */
  kill(): void;
  /** The database the stack made for itself (label other than the default): the test drops it. */
  database: string;
  ports: { gateway: number; auth: number; chat: number; admin: number; worker: number };
  exited: Promise<number | null>;
  output: () => string;
}

/** Starts the stack and waits for "Vivier is ready"; the caller stops it (SIGINT, or SIGKILL in afterEach). */
export async function startStack(extraEnv: Record<string, string>, label = 'dev-stack'): Promise<Stack> {
  const ports = { gateway: await freePort(), auth: await freePort(), chat: await freePort(), admin: await freePort(), worker: await freePort() };
  const admin = new URL(process.env.VIVIER_TEST_DATABASE_ADMIN_URL!);
  // Another label, another database: two stacks on one database would share outboxes.
  const database = label === 'dev-stack' ? admin.pathname.slice(1) : `${admin.pathname.slice(1)}_${label}`;
  admin.pathname = '/postgres';
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'tools/dev-stack/src/cli.ts'), 'start'], {
    cwd: ROOT,
    env: {
      ...process.env,
      VIVIER_QUIET: '1',
      LOG_LEVEL: 'warn',
      DATABASE_URL: admin.toString(),
      VIVIER_DB_NAME: database,
      PORT: String(ports.gateway),
      AUTH_PORT: String(ports.auth),
      CHAT_PORT: String(ports.chat),
      ADMIN_PORT: String(ports.admin),
      WORKER_PORT: String(ports.worker),
      // Its own dev broker (KAFKA_BROKERS unset) and Redis keys: these services must not join the
      // consumer groups of other test files running at the same time.
      KAFKA_BROKERS: '',
      // The dev broker holds every rebalance for a session timeout: keep group joins short.
      CONSUMER_SESSION_TIMEOUT_MS: '6000',
      REDIS_KEY_PREFIX: `${process.env.VIVIER_TEST_REDIS_PREFIX ?? 'vivier-test:'}${label}:`,
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, so a failed test can take the services down with it (kill()).
    detached: true,
  });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const kill = () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  const ready = `Vivier is ready at http://127.0.0.1:${ports.gateway}`;
  try {
    await expect.poll(() => output.includes(ready) || child.exitCode !== null, { timeout: 90_000, interval: 200 }).toBe(true);
    expect(output, output).toContain(ready);
  } catch (error) {
    kill();
    throw error;
  }
  return { child, kill, database, ports, exited, output: () => output };
}
