/**
 * Where the latency of one `POST /v1/chat/completions` goes at one connection (issue 6): the
 * provider simulator alone, chat called directly (with the context the gateway would sign), and
 * the whole path through the gateway, each as configured by default, with chat's quota leases
 * off, with the settlement linger of before (5 ms instead of 100), and with the gateway's edge
 * leases off (a Redis script per request), in one run.
 *
 *   npm run bench:hops -w @vivier/bench
 *
 * Three chat processes (defaults; CHAT_QUOTA_LEASE_REQUESTS=0; CHAT_USAGE_SETTLE_LINGER_MS=5),
 * each behind its own gateway, and a fourth gateway (EDGE_LEASE_REQUESTS=0) in front of the
 * default chat, share auth, PostgreSQL, Redis, the dev Kafka broker and the simulator. One user
 * per side. Rounds alternate between the eight targets; figures are medians
 * of the rounds' p50 and p99, and the ratios medians of the per-round ratios.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort, startKafka, startServiceProcess, stopProcess, waitReady, type ServiceProcess } from '@vivier/dev-stack';
import { startTestInfrastructure } from '@vivier/dev-stack/test-infra';
import { signContext } from '@vivier/service-kit';
import { closedLoop, type LoadResult } from './load';
import { gatewayEnv, newApiKey, serviceEnv, startSimulator } from './services';
import { machineNote, median, round, writeSection } from './stats';

const ROUNDS = Number(process.env.ROUNDS ?? 7);
const SECONDS = Number(process.env.SECONDS ?? 2);
const SECRET = 'bench-internal-identity-secret-0123456789';

async function main(): Promise<void> {
  const infra = await startTestInfrastructure();
  const dev = await startKafka();
  const procs: ServiceProcess[] = [];
  const sim = await startSimulator();
  try {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vivier-hops-bench-'));
    const providersFile = path.join(dir, 'providers.json');
    writeFileSync(providersFile, JSON.stringify({ providers: { openai: { baseUrl: `${sim.url}/v1`, apiKey: 'sk-sim' } } }));
    const base = serviceEnv(infra.env, dev.bootstrap);
    const authPort = await freePort();
    const auth = startServiceProcess('auth', { port: authPort, env: { ...base, DATABASE_URL: infra.env.VIVIER_TEST_DATABASE_URL_AUTH } });
    procs.push(auth);
    const side = async (leases: number, lingerMs?: number) => {
      const chatPort = await freePort();
      const chat = startServiceProcess('chat', {
        port: chatPort,
        env: { ...base, DATABASE_URL: infra.env.VIVIER_TEST_DATABASE_URL_CHAT, PROVIDERS_FILE: providersFile, DATABASE_POOL_MAX: '20', CHAT_QUOTA_LEASE_REQUESTS: String(leases), ...(lingerMs === undefined ? {} : { CHAT_USAGE_SETTLE_LINGER_MS: String(lingerMs) }) },
      });
      procs.push(chat);
      await Promise.all([waitReady(auth), waitReady(chat)]);
      const gatewayPort = await freePort();
      // GATEWAY_NODE_OPTIONS=--cpu-prof … profiles the gateways (the first is the default side's).
      const gateway = startServiceProcess('gateway', { port: gatewayPort, env: { ...gatewayEnv(base, authPort, chatPort), NODE_OPTIONS: process.env.GATEWAY_NODE_OPTIONS ?? '' } });
      procs.push(gateway);
      await waitReady(gateway);
      const origin = `http://127.0.0.1:${gatewayPort}`;
      const { apiKey, userId } = await newApiKey(origin, `hops-${leases}-${lingerMs ?? 'default'}`);
      // What the gateway would sign for this key's requests (valid for the whole run).
      const context = () =>
        signContext({ ip: '127.0.0.1', identity: { sub: userId, role: 'user', kind: 'api_key', keyId: 'bench' }, exp: Math.floor(Date.now() / 1000) + 3600 }, SECRET);
      return { chatPort, chat: `http://127.0.0.1:${chatPort}`, gateway: origin, apiKey, context };
    };
    const on = await side(16);
    const off = await side(0);
    const short = await side(16, 5);
    // One more gateway in front of the default chat, asking Redis on every request (no edge leases).
    const exactPort = await freePort();
    const exact = startServiceProcess('gateway', { port: exactPort, env: { ...gatewayEnv(base, authPort, on.chatPort), EDGE_LEASE_REQUESTS: '0' } });
    procs.push(exact);
    await waitReady(exact);

    const body = (model: string) => JSON.stringify({ model, messages: [{ role: 'user', content: 'echo: The quick brown fox jumps over the lazy dog' }] });
    const targets = [
      { name: 'provider simulator, direct', origin: sim.url, headers: { authorization: 'Bearer sk-sim' }, body: body('gpt-4o-mini') },
      { name: 'chat, direct, leases on', origin: on.chat, headers: on.context(), body: body('openai/gpt-4o-mini') },
      { name: 'chat, direct, linger 5 ms', origin: short.chat, headers: short.context(), body: body('openai/gpt-4o-mini') },
      { name: 'chat, direct, leases off', origin: off.chat, headers: off.context(), body: body('openai/gpt-4o-mini') },
      { name: 'gateway → chat, leases on', origin: on.gateway, headers: { authorization: `Bearer ${on.apiKey}` }, body: body('openai/gpt-4o-mini') },
      { name: 'gateway → chat, linger 5 ms', origin: short.gateway, headers: { authorization: `Bearer ${short.apiKey}` }, body: body('openai/gpt-4o-mini') },
      { name: 'gateway → chat, leases off', origin: off.gateway, headers: { authorization: `Bearer ${off.apiKey}` }, body: body('openai/gpt-4o-mini') },
      { name: 'gateway → chat, edge leases off', origin: `http://127.0.0.1:${exactPort}`, headers: { authorization: `Bearer ${on.apiKey}` }, body: body('openai/gpt-4o-mini') },
    ];
    const run = (t: (typeof targets)[number], durationMs: number) =>
      closedLoop({ origin: t.origin, path: '/v1/chat/completions', headers: t.headers, body: t.body, connections: 1, durationMs });
    for (const t of targets) await run(t, 2000); // warm-up: JIT, pools, prepared statements, the key cache

    // PostgreSQL commits over each target's rounds (the whole cluster; a round's count runs until
    // the next round starts, so the settlements written just after a round are its own).
    const stats = new pg.Pool({ connectionString: infra.env.VIVIER_TEST_DATABASE_ADMIN_URL, max: 1 });
    const commits = async () => {
      await stats.query('select pg_stat_clear_snapshot()');
      return Number((await stats.query<{ n: string }>('select sum(xact_commit)::text as n from pg_stat_database')).rows[0]!.n);
    };
    const results = new Map<string, LoadResult[]>();
    const committed = new Map<string, number>();
    let last = await commits();
    let previous: string | undefined;
    for (let r = 0; r < ROUNDS; r++) {
      for (const t of targets) {
        const now = await commits();
        if (previous) committed.set(previous, (committed.get(previous) ?? 0) + now - last);
        last = now;
        previous = t.name;
        const result = await run(t, SECONDS * 1000);
        results.set(t.name, [...(results.get(t.name) ?? []), result]);
        process.stdout.write(`${t.name}: p50 ${round(result.p50Ms, 3)} ms, ${Math.round(result.rps)}/s, errors ${result.errors}\n`);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 1200));
    committed.set(previous!, (committed.get(previous!) ?? 0) + (await commits()) - last);
    await stats.end();

    const simP50 = median(results.get(targets[0]!.name)!.map((x) => x.p50Ms));
    const rows = targets.map((t) => {
      const list = results.get(t.name)!;
      const requests = list.reduce((n, x) => n + x.requests, 0);
      const p50 = median(list.map((x) => x.p50Ms));
      const tx = t.name.startsWith('provider') ? '·' : String(round(committed.get(t.name)! / requests, 2));
      return `| ${t.name} | **${round(p50, 2)}** | ${round(median(list.map((x) => x.p99Ms)), 2)} | ${t.name.startsWith('provider') ? '·' : round(p50 - simP50, 2)} | ${Math.round(median(list.map((x) => x.rps))).toLocaleString('en')} | ${tx} | ${list.reduce((n, x) => n + x.errors, 0)} |`;
    });
    const ratio = (a: string, b: string) => {
      const x = results.get(a)!;
      const y = results.get(b)!;
      return `${round(median(x.map((v, i) => v.p50Ms / y[i]!.p50Ms)), 2)}×`;
    };
    const perRound = (name: string) => results.get(name)!.map((x) => round(x.p50Ms, 2)).join(', ');

    await writeSection(
      'hops',
      `## Where one OpenAI-compatible request's latency goes, at one connection (issue 6)

Command: \`npm run bench:hops -w @vivier/bench\` (${machineNote()}; one connection, closed loop, non-streamed, ${ROUNDS} rounds × ${SECONDS} s per target, alternating, after a 2 s warm-up each; medians).
Every party is its own process on the same 2 cores: the load generator, the provider simulator (zero latency, OpenAI protocol), auth,
three chat processes (defaults, with quota leases on and a settlement linger of 100 ms; leases off: \`CHAT_QUOTA_LEASE_REQUESTS=0\`;
the linger of before: \`CHAT_USAGE_SETTLE_LINGER_MS=5\`), each behind its own gateway (API key, rate limits on, edge leases on),
and a fourth gateway in front of the default chat with edge leases off (\`EDGE_LEASE_REQUESTS=0\`: a Redis script per request),
PostgreSQL, Redis and the dev Kafka broker. Chat called directly gets the context the gateway would sign; one user per side
(the two gateways in front of the default chat share its user and API key).
"Leases" in the target names are chat's quota leases; "edge leases" the gateway's (apps/gateway/README.md, Rate limits).

| target | p50 ms | p99 ms | added p50 ms (over the simulator) | req/s | PostgreSQL commits per request | errors |
| --- | --- | --- | --- | --- | --- | --- |
${rows.join('\n')}

**Leases on / off, p50** (median of the per-round ratios): chat directly ${ratio('chat, direct, leases on', 'chat, direct, leases off')}, through the gateway ${ratio('gateway → chat, leases on', 'gateway → chat, leases off')}.
Per-round p50 (ms): chat leases on ${perRound('chat, direct, leases on')}; off ${perRound('chat, direct, leases off')};
through the gateway on ${perRound('gateway → chat, leases on')}; off ${perRound('gateway → chat, leases off')}.
**Settlement linger 100 ms / 5 ms, p50** (both with leases): chat directly ${ratio('chat, direct, leases on', 'chat, direct, linger 5 ms')}, through the gateway ${ratio('gateway → chat, leases on', 'gateway → chat, linger 5 ms')}.
Per-round p50 (ms) with 5 ms: chat ${perRound('chat, direct, linger 5 ms')}; through the gateway ${perRound('gateway → chat, linger 5 ms')}.
**Edge leases on / off, p50** (the same chat behind both gateways): ${ratio('gateway → chat, leases on', 'gateway → chat, edge leases off')}.
Per-round p50 (ms) with edge leases off: ${perRound('gateway → chat, edge leases off')}.

With leases off, each request's reservation is a statement (and a commit) that runs alongside the provider call; on this
machine it still costs most of chat's own latency, as the database, chat, the simulator and the load generator contend for the
same two cores. With leases on, one statement reserves sixteen requests' worth for a user far from their limit (apps/chat/README.md,
Quotas): what is left per request is the settlement, written after the answer and shared by requests ending within
\`CHAT_USAGE_SETTLE_LINGER_MS\`, and the outbox relay publishing its usage event. The gap between chat and the whole path is the
gateway: its hop, and, without edge leases, its Redis script per request (revocation facts and rate limits); with them,
one script per lease of up to 64 requests.
A settlement written after the answer still competes with the next request for the two cores: its statement and commit, the outbox
relay's pass and its Kafka request. Lingering 100 ms instead of 5 before a settlement statement (a user near their limit is settled at
once) writes one for a few dozen requests at one connection instead of one for one or two.`,
    );
  } finally {
    for (const p of procs.reverse()) await stopProcess(p);
    sim.proc.kill('SIGTERM');
    await dev.stop();
    await infra.stop();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
