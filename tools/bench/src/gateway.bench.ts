/**
 * Gateway benchmark (issue 4): throughput of an authenticated request (access token) to a trivial
 * service route through the gateway, against the same route called directly, in one run.
 *
 *   npm run bench:gateway -w @vivier/bench
 *
 * Three processes, as in production: a stub upstream (the trivial route and auth's JWKS), the
 * gateway (`apps/gateway/src/main.ts`, real Redis) and this load generator (closed loop, N keep-alive
 * connections, each sending its next request as soon as the last answer is read). A second gateway
 * pointed at a Redis that refuses connections shows what the one Redis round trip per request costs,
 * and a bare node:http + undici proxy shows the floor any Node proxy has on this machine.
 * Rounds alternate between the targets; figures are medians of the rounds.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomUUID, sign, type KeyObject } from 'node:crypto';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { ROOT, startServiceProcess, stopProcess, waitReady, type ServiceProcess, freePort } from '@vivier/dev-stack';
import { closedLoop, type LoadResult } from './load';
import { machineNote, median, round, writeSection } from './stats';

// Short rounds, many of them: the machine is shared, and targets measured seconds apart see the same load.
const ROUNDS = Number(process.env.ROUNDS ?? 12);
const SECONDS = Number(process.env.SECONDS ?? 2);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 32);
const ROUTE = '/api/v1/models';

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** An access token as auth issues it (EdDSA, kid, typ at+jwt), signed with node:crypto. */
function accessToken(privateKey: KeyObject, kid: string): string {
  const now = Math.floor(Date.now() / 1000);
  const input = `${b64({ alg: 'EdDSA', kid, typ: 'at+jwt' })}.${b64({
    iss: 'vivier',
    aud: 'vivier-api',
    sub: 'bench-user',
    sid: 'bench-session',
    role: 'user',
    iat: now,
    exp: now + 3600,
    jti: randomUUID(),
  })}`;
  return `${input}.${sign(null, Buffer.from(input), privateKey).toString('base64url')}`;
}

/** Starts one of the helper servers of this folder as its own process; resolves once it listens. */
async function startHelper(
  file: string,
  env: Record<string, string>,
): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'tools/bench/src', file)], {
    cwd: ROOT,
    env: { ...process.env, PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const match = /^listening (\d+)$/.exec(line);
      if (match) resolve(Number(match[1]));
    });
    child.once('exit', (code) => reject(new Error(`${file} exited with ${code}`)));
  });
  return { url: `http://127.0.0.1:${port}`, child };
}

async function startGateway(stubUrl: string, redisUrl: string, prefix: string, extra: Record<string, string> = {}): Promise<ServiceProcess> {
  const port = await freePort();
  const gateway = startServiceProcess('gateway', {
    port,
    env: {
      ...process.env,
      NODE_ENV: 'production',
      LOG_LEVEL: 'warn',
      INTERNAL_IDENTITY_SECRET: 'bench-internal-identity-secret-0123456789',
      AUTH_URL: stubUrl,
      CHAT_URL: stubUrl,
      ADMIN_URL: stubUrl,
      REDIS_URL: redisUrl,
      REDIS_KEY_PREFIX: prefix,
      // The limits are checked on every request (that is the cost measured) but never reached.
      RATE_LIMIT_PER_USER: '1000000000',
      RATE_LIMIT_PER_IP_AUTHENTICATED: '1000000000',
      ...extra,
    },
  });
  await waitReady(gateway);
  return gateway;
}

interface Target {
  name: string;
  origin: string;
  headers: Record<string, string>;
  results: LoadResult[];
}

async function main(): Promise<void> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const kid = `bench-${randomUUID().slice(0, 8)}`;
  const jwks = JSON.stringify({
    keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'EdDSA', use: 'sig' }],
  });
  const token = accessToken(privateKey, kid);
  const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
  const prefix = `vivier-bench:${process.pid}:`;

  const stub = await startHelper('gateway-stub-upstream.ts', { STUB_JWKS: jwks });
  const bare = await startHelper('bare-proxy.ts', { UPSTREAM_URL: stub.url });
  const gateway = await startGateway(stub.url, redisUrl, prefix);
  const noRedis = await startGateway(stub.url, 'redis://127.0.0.1:1', prefix);
  const exact = await startGateway(stub.url, redisUrl, prefix, { EDGE_LEASE_REQUESTS: '0' });
  try {
    const auth = { authorization: `Bearer ${token}` };
    const targets: Target[] = [
      { name: 'direct to the service', origin: stub.url, headers: auth, results: [] },
      { name: 'through the gateway', origin: `http://127.0.0.1:${gateway.port}`, headers: auth, results: [] },
      {
        name: 'through the gateway, edge leases off',
        origin: `http://127.0.0.1:${exact.port}`,
        headers: auth,
        results: [],
      },
      {
        name: 'through the gateway, Redis unreachable',
        origin: `http://127.0.0.1:${noRedis.port}`,
        headers: auth,
        results: [],
      },
      {
        name: 'through a bare node:http + undici proxy (floor)',
        origin: bare.url,
        headers: auth,
        results: [],
      },
    ];
    for (const target of targets.slice(1, 4)) {
      const ok = await fetch(`${target.origin}${ROUTE}`, { headers: target.headers });
      const refused = await fetch(`${target.origin}${ROUTE}`);
      if (ok.status !== 200 || refused.status !== 401)
        throw new Error(
          `${target.name}: expected 200 with the token and 401 without, got ${ok.status}/${refused.status}`,
        );
    }
    process.stdout.write(`warming up (${targets.length} × 2 s)\n`);
    for (const target of targets)
      await closedLoop({
        origin: target.origin,
        path: ROUTE,
        headers: target.headers,
        connections: CONNECTIONS,
        durationMs: 2000,
      });

    for (let r = 0; r < ROUNDS; r++) {
      // Rotate the order so no target always runs on a warmer (or noisier) machine.
      const order = targets.map((_, i) => targets[(i + r) % targets.length]!);
      for (const target of order) {
        const result = await closedLoop({
          origin: target.origin,
          path: ROUTE,
          headers: target.headers,
          connections: CONNECTIONS,
          durationMs: SECONDS * 1000,
        });
        if (result.errors > 0) throw new Error(`${target.name}: ${result.errors} failed requests`);
        target.results.push(result);
        process.stdout.write(
          `round ${r + 1}/${ROUNDS} ${target.name}: ${Math.round(result.rps)} req/s, p50 ${round(result.p50Ms, 2)} ms, p99 ${round(result.p99Ms, 2)} ms\n`,
        );
      }
    }

    type Summary = { name: string; rps: number; p50: number; p99: number; rounds: number[] };
    const summary: Summary[] = targets.map((t) => ({
      name: t.name,
      rps: median(t.results.map((x) => x.rps)),
      p50: median(t.results.map((x) => x.p50Ms)),
      p99: median(t.results.map((x) => x.p99Ms)),
      rounds: t.results.map((x) => Math.round(x.rps)),
    }));
    const [direct, via, viaExact, viaNoRedis, floor] = [0, 1, 2, 3, 4].map((i) => summary[i]!) as [
      Summary,
      Summary,
      Summary,
      Summary,
      Summary,
    ];
    const ratio = via.rps / direct.rps;
    // Each round's targets ran seconds apart under the same background load: their ratio is steadier.
    const perRound = (a: Summary, b: Summary) => median(a.rounds.map((x, i) => x / b.rounds[i]!));
    const roundRatio = perRound(via, direct);
    // With the machine saturated, 1/throughput is the machine time one request takes.
    const perRequestUs = 1e6 / via.rps - 1e6 / direct.rps;
    const markdown = `
## Gateway: authenticated pass-through (issue 4)

Command: \`npm run bench:gateway -w @vivier/bench\` (${machineNote()}; ${CONNECTIONS} keep-alive connections, closed loop, ${ROUNDS} rounds × ${SECONDS} s per target, rounds alternating; medians).
Route: \`GET ${ROUTE}\` with \`Authorization: Bearer <EdDSA access token>\`; the service is a stub answering a 90-byte JSON body;
gateway with \`NODE_ENV=production LOG_LEVEL=warn\`, rate limits on (quota set out of reach), real Redis.

| target | req/s | p50 ms | p99 ms |
| --- | --- | --- | --- |
${summary.map((s) => `| ${s.name} | **${Math.round(s.rps).toLocaleString('en')}** | ${round(s.p50, 2)} | ${round(s.p99, 2)} |`).join('\n')}

**Gateway / direct: ${round(roundRatio, 2)}×** (median of the per-round ratios; ${round(ratio, 2)}× as a ratio of the medians), the same route in the same run.
Added latency at this load: ${round(via.p50 - direct.p50, 2)} ms at p50.
By default the gateway takes its rate limits and revocation facts from edge leases (one Redis script per lease of up to 64
requests, apps/gateway/README.md); with \`EDGE_LEASE_REQUESTS=0\` (one script per request) it reaches ${round(perRound(viaExact, direct), 2)}× of direct:
leases give ${round(perRound(via, viaExact), 2)}× the throughput of a script per request (median of the per-round ratios).
Without Redis at all (unreachable, limits in memory) it reaches ${round(perRound(viaNoRedis, direct), 2)}× of direct (${round(perRound(via, viaNoRedis), 2)}× of that with leases).
The floor of any Node proxy here (node:http + undici, nothing else) is ${round(perRound(floor, direct), 2)}× of direct: the gateway
runs at ${round(perRound(via, floor), 2)}× of that floor.

Per request the gateway: sets the precomputed security headers, checks CORS and the body limit, finds the token in its
verified-token cache (the Ed25519 signature is checked once per token), takes the request from its edge lease or runs
one Redis script for a new one (session revoked? tokens-valid-after? user disabled? user and per-IP GCRA limits;
auto-pipelined with the checks of concurrent requests), signs the context (HMAC-SHA256, once per caller and second) and streams the
request and response through a keep-alive pool. The load generator, the gateway and the stub share the machine's 2 cores,
so the ratio understates what a gateway on its own cores would do: here the gateway hop costs ≈ ${Math.round(perRequestUs)} µs of machine time per request.

Rounds (req/s): ${summary.map((s) => `${s.name}: ${s.rounds.join(', ')}`).join('; ')}.
`;
    await writeSection('gateway', markdown);
    process.stdout.write(markdown);
  } finally {
    await stopProcess(exact);
    await stopProcess(noRedis);
    await stopProcess(gateway);
    bare.child.kill('SIGTERM');
    stub.child.kill('SIGTERM');
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
