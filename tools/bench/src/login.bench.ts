/**
 * Login benchmark (issue 4): login latency of the auth service with its argon2id parameters.
 *
 *   node --import tsx tools/bench/src/login.bench.ts
 *
 * Starts its own test infrastructure (fresh database, Redis prefix, dev Kafka broker) and the auth
 * service as its own process (apps/auth/src/main.ts) on a loopback port, so it touches nothing
 * else. One account signs in sequentially after a warm-up; then four clients sign in at once.
 * p50/p99 of each go to docs/benchmarks.md (section `login`).
 */
import os from 'node:os';
import { startServiceProcess, stopProcess, waitReady, type ServiceProcess, freePort } from '@vivier/dev-stack';
import { startTestInfrastructure } from '@vivier/dev-stack/test-infra';
import { machineNote, median, percentile, round, writeSection } from './stats';

const WARM_UP = 10;
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const SEQUENTIAL = Number(process.env.LOGINS ?? 60);
const CLIENTS = 4;
const CONCURRENT_ROUNDS = Math.ceil(SEQUENTIAL / CLIENTS);
const ARGON2 = { ARGON2_MEMORY_KIB: '19456', ARGON2_TIME_COST: '2', ARGON2_PARALLELISM: '1' };
const PASSWORD = 'benchmark passphrase with enough entropy 7';

async function main(): Promise<void> {
  const loadAtStart = os.loadavg()[0]!;
  const infra = await startTestInfrastructure();
  let auth: ServiceProcess | undefined;
  try {
    const port = await freePort();
    auth = startServiceProcess('auth', {
      port,
      env: {
        ...process.env,
        NODE_ENV: 'test',
        LOG_LEVEL: 'warn',
        DATABASE_URL: infra.env.VIVIER_TEST_DATABASE_URL_AUTH,
        REDIS_URL: infra.env.REDIS_URL,
        REDIS_KEY_PREFIX: infra.env.VIVIER_TEST_REDIS_PREFIX,
        KAFKA_BROKERS: infra.env.KAFKA_BROKERS,
        KAFKA_PRODUCER_IDEMPOTENT: infra.env.KAFKA_PRODUCER_IDEMPOTENT,
        ...ARGON2,
        // The throttles are not what is measured.
        LOGIN_MAX_FAILURES_PER_IP: '1000000',
        REGISTER_RATE_LIMIT_PER_IP: '1000',
      },
    });
    await waitReady(auth);
    const base = `http://127.0.0.1:${port}`;
    const post = async (path: string, body: unknown) => {
      const res = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      await res.arrayBuffer();
      return res.status;
    };
    const login = async (email: string) => {
      const started = performance.now();
      const status = await post('/api/v1/auth/login', { email, password: PASSWORD });
      const elapsed = performance.now() - started;
      if (status !== 200) throw new Error(`login answered ${status}`);
      return elapsed;
    };

    const accounts: string[] = [];
    for (let i = 0; i < CLIENTS; i += 1) {
      const email = `bench-${i}@example.test`;
      const status = await post('/api/v1/auth/register', { email, password: PASSWORD });
      if (status !== 201) throw new Error(`register answered ${status}`);
      accounts.push(email);
    }

    for (let i = 0; i < WARM_UP; i += 1) await login(accounts[0]!);
    const rounds: Array<{ sequential: number[]; sequentialPerSecond: number; concurrent: number[]; concurrentPerSecond: number }> = [];
    for (let r = 0; r < ROUNDS; r += 1) {
      const sequential: number[] = [];
      let started = performance.now();
      for (let i = 0; i < SEQUENTIAL; i += 1) sequential.push(await login(accounts[0]!));
      const sequentialPerSecond = (sequential.length / (performance.now() - started)) * 1000;
      const concurrent: number[] = [];
      started = performance.now();
      for (let c = 0; c < CONCURRENT_ROUNDS; c += 1) concurrent.push(...(await Promise.all(accounts.map(login))));
      const concurrentPerSecond = (concurrent.length / (performance.now() - started)) * 1000;
      rounds.push({ sequential, sequentialPerSecond, concurrent, concurrentPerSecond });
      process.stdout.write(
        `round ${r + 1}: 1 client p50 ${round(percentile(sequential, 50))} ms p99 ${round(percentile(sequential, 99))} ms; ` +
          `${CLIENTS} clients p50 ${round(percentile(concurrent, 50))} ms p99 ${round(percentile(concurrent, 99))} ms\n`,
      );
    }

    // Each figure: the median over the rounds of that round's statistic.
    const stat = (pick: (r: (typeof rounds)[number]) => number) => round(median(rounds.map(pick)));
    const row = (name: string, key: 'sequential' | 'concurrent') =>
      `| ${name} | ${rounds[0]![key].length} × ${ROUNDS} | ${stat((r) => percentile(r[key], 50))} ms | ${stat((r) => percentile(r[key], 99))} ms | ${stat((r) => (key === 'sequential' ? r.sequentialPerSecond : r.concurrentPerSecond))} |`;
    await writeSection(
      'login',
      `## Login latency (auth, issue 4)

Command: \`node --import tsx tools/bench/src/login.bench.ts\` (${machineNote()}; 2 cores, shared with other work and noisy: 1-minute load average ${round(loadAtStart, 2)} at the start).
The auth service runs as its own process on a loopback port against real PostgreSQL, Redis and the dev Kafka broker;
\`POST /api/v1/auth/login\` with a correct password, called directly (no gateway). argon2id m=${ARGON2.ARGON2_MEMORY_KIB} KiB, t=${ARGON2.ARGON2_TIME_COST}, p=${ARGON2.ARGON2_PARALLELISM}
(the service's defaults and floor). A login verifies one hash, reads the account, writes the session, its refresh
token and the \`user.logged_in\` outbox row in one transaction, and signs an EdDSA access token.

Figures are medians over ${ROUNDS} rounds (after ${WARM_UP} warm-up logins) of each round's p50, p99 and throughput.

| run | logins | p50 | p99 | logins/s |
| --- | --- | --- | --- | --- |
${row('1 client, sequential', 'sequential')}
${row(`${CLIENTS} clients at once`, 'concurrent')}

Nearly all of a login is the hash (19 MiB of memory per hash, computed on libuv's thread pool), so on 2 cores
concurrent logins queue behind each other: latency grows with concurrency far more than throughput does, which is one
reason sign-in is throttled per IP and per account.`,
    );
  } finally {
    if (auth) await stopProcess(auth);
    await infra.stop();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
