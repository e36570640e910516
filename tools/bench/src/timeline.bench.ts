/**
 * Where one `POST /v1/chat/completions` spends its time, hop by hop, at one connection (issue 6):
 * every packet on the loopback interface is timestamped by the kernel (tcpdump), so each process's
 * share is read off the wire, not from inside the process.
 *
 *   npm run bench:timeline -w @vivier/bench      (needs tcpdump and root: apt-get install -y tcpdump)
 *
 * Targets, one connection, non-streamed, closed loop: the provider simulator called directly, a
 * bare Node proxy in front of it (tools/bench/src/bare-proxy.ts, the floor of any Node hop), and
 * Vivier (gateway → chat → simulator, API key, rate limits, quota and usage accounting on). Each
 * round measures every target twice: once as is (the load generator's own p50) and once under
 * capture, whose packets give the per-hop figures. Medians of the rounds.
 */
import type { ChildProcess } from 'node:child_process';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, ROOT, startKafka, startServiceProcess, stopProcess, waitReady, type ServiceProcess } from '@vivier/dev-stack';
import { startTestInfrastructure } from '@vivier/dev-stack/test-infra';
import { closedLoop, type LoadResult } from './load';
import { gatewayEnv, newApiKey, serviceEnv, startChild, startSimulator } from './services';
import { machineNote, median, percentile, round, writeSection } from './stats';

const ROUNDS = Number(process.env.ROUNDS ?? 5);
const SECONDS = Number(process.env.SECONDS ?? 2);
const WARMUP_SECONDS = Number(process.env.WARMUP_SECONDS ?? 5);

/** One data-carrying packet: when, from which port to which. */
interface Packet {
  us: number;
  src: number;
  dst: number;
}

/**
 * The hops of a target, client side first: `ports[0]` is the port the load generator calls,
 * `ports.at(-1)` the simulator's. A request is the packets from one request to ports[0] to the
 * next: for each hop, the first packet sent to it (its request arrives) and the last packet sent
 * from it (its answer leaves).
 */
function segments(packets: Packet[], ports: number[]): Map<string, number[]> {
  const hops = ports.length;
  const out = new Map<string, number[]>();
  const add = (name: string, us: number) => out.set(name, [...(out.get(name) ?? []), us]);
  let arrived: Array<number | undefined> = [];
  let left: Array<number | undefined> = [];
  const close = (next: number | undefined) => {
    if (arrived.length === 0 || arrived.some((t, i) => t === undefined || left[i] === undefined) || arrived.length < hops) return;
    for (let i = 0; i < hops - 1; i++) {
      add(`in:${i}`, arrived[i + 1]! - arrived[i]!);
      add(`out:${i}`, left[i]! - left[i + 1]!);
    }
    add('provider', left[hops - 1]! - arrived[hops - 1]!);
    add('total', left[0]! - arrived[0]!);
    if (next !== undefined) add('client', next - left[0]!);
  };
  for (const p of packets) {
    const to = ports.indexOf(p.dst);
    const from = ports.indexOf(p.src);
    if (to === 0) {
      close(p.us);
      arrived = new Array<number | undefined>(hops).fill(undefined);
      left = new Array<number | undefined>(hops).fill(undefined);
      arrived[0] = p.us;
      continue;
    }
    if (arrived.length === 0) continue;
    if (to > 0 && arrived[to] === undefined) arrived[to] = p.us;
    if (from >= 0) left[from] = p.us;
  }
  close(undefined);
  return out;
}

/** The data-carrying TCP packets of a capture file (tcpdump's own reader; lengths 0 are acks). */
async function readCapture(file: string): Promise<Packet[]> {
  const reader = spawn('tcpdump', ['-r', file, '-nn', '-tt', 'tcp'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const packets: Packet[] = [];
  for await (const line of createInterface({ input: reader.stdout })) {
    const m = /^(\d+)\.(\d{6}) IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+):.* length (\d+)/.exec(line);
    if (!m || m[5] === '0') continue;
    packets.push({ us: Number(m[1]) * 1e6 + Number(m[2]), src: Number(m[3]), dst: Number(m[4]) });
  }
  return packets;
}

/** Runs `load` while tcpdump captures the loopback traffic of `ports`; returns the load's result and the packets. */
async function captured(dir: string, ports: number[], load: () => Promise<LoadResult>): Promise<{ result: LoadResult; packets: Packet[] }> {
  const file = path.join(dir, `capture-${ports[0]}.pcap`);
  const filter = `tcp and (${ports.map((p) => `port ${p}`).join(' or ')})`;
  // -B: a kernel buffer large enough that nothing is dropped; -U not needed (read after the run).
  const dump = spawn('tcpdump', ['-i', 'lo', '-nn', '-B', '65536', '-w', file, filter], { stdio: ['ignore', 'ignore', 'pipe'] });
  const listening = new Promise<void>((resolve, reject) => {
    createInterface({ input: dump.stderr! }).on('line', (line) => {
      if (/listening on/.test(line)) resolve();
    });
    dump.once('exit', (code) => reject(new Error(`tcpdump exited with ${code} before capturing (root and tcpdump needed: apt-get install -y tcpdump)`)));
  });
  await listening;
  const result = await load();
  const exited = new Promise((resolve) => dump.once('exit', resolve));
  dump.kill('SIGINT');
  await exited;
  const packets = await readCapture(file);
  rmSync(file, { force: true });
  return { result, packets };
}

async function main(): Promise<void> {
  if (spawnSync('tcpdump', ['--version']).error) throw new Error('tcpdump is not installed: apt-get install -y tcpdump');
  const infra = await startTestInfrastructure();
  const dev = await startKafka();
  const procs: ServiceProcess[] = [];
  const children: ChildProcess[] = [];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vivier-timeline-bench-'));
  try {
    const sim = await startSimulator();
    children.push(sim.proc);
    const bare = await startChild(process.execPath, ['--import', 'tsx', path.join(ROOT, 'tools/bench/src/bare-proxy.ts')], { ...process.env, PORT: '0', UPSTREAM_URL: sim.url }, /^listening (\d+)$/);
    children.push(bare.proc);
    const providersFile = path.join(dir, 'providers.json');
    writeFileSync(providersFile, JSON.stringify({ providers: { openai: { baseUrl: `${sim.url}/v1`, apiKey: 'sk-sim' } } }));
    const base = serviceEnv(infra.env, dev.bootstrap);
    const [authPort, chatPort, gatewayPort] = [await freePort(), await freePort(), await freePort()];
    const auth = startServiceProcess('auth', { port: authPort, env: { ...base, DATABASE_URL: infra.env.VIVIER_TEST_DATABASE_URL_AUTH } });
    const chat = startServiceProcess('chat', { port: chatPort, env: { ...base, DATABASE_URL: infra.env.VIVIER_TEST_DATABASE_URL_CHAT, PROVIDERS_FILE: providersFile } });
    procs.push(auth, chat);
    await Promise.all([waitReady(auth), waitReady(chat)]);
    const gateway = startServiceProcess('gateway', { port: gatewayPort, env: gatewayEnv(base, authPort, chatPort) });
    procs.push(gateway);
    await waitReady(gateway);
    const vivier = `http://127.0.0.1:${gatewayPort}`;
    const { apiKey } = await newApiKey(vivier, 'timeline');

    const simPort = Number(new URL(sim.url).port);
    const barePort = Number(bare.match[1]);
    const messages = [{ role: 'user', content: 'echo: The quick brown fox jumps over the lazy dog' }];
    const targets = [
      { name: 'provider simulator, direct', origin: sim.url, ports: [simPort], headers: { authorization: 'Bearer sk-sim' }, model: 'gpt-4o-mini' },
      { name: 'bare Node proxy (floor)', origin: `http://127.0.0.1:${barePort}`, ports: [barePort, simPort], headers: { authorization: 'Bearer sk-sim' }, model: 'gpt-4o-mini' },
      { name: 'Vivier (gateway → chat)', origin: vivier, ports: [gatewayPort, chatPort, simPort], headers: { authorization: `Bearer ${apiKey}` }, model: 'openai/gpt-4o-mini' },
    ];
    const load = (t: (typeof targets)[number], seconds: number) => () =>
      closedLoop({ origin: t.origin, path: '/v1/chat/completions', headers: t.headers, body: JSON.stringify({ model: t.model, messages }), connections: 1, durationMs: seconds * 1000 });
    for (const t of targets) await load(t, WARMUP_SECONDS)();

    const plain = new Map<string, LoadResult[]>();
    const under = new Map<string, LoadResult[]>();
    /** Per target and segment: each round's p50 and p90 (µs). */
    const seg = new Map<string, Map<string, { p50: number[]; p90: number[] }>>();
    for (let r = 0; r < ROUNDS; r++) {
      for (const t of targets) {
        plain.set(t.name, [...(plain.get(t.name) ?? []), await load(t, SECONDS)()]);
        const { result, packets } = await captured(dir, t.ports, load(t, SECONDS));
        under.set(t.name, [...(under.get(t.name) ?? []), result]);
        const bySegment = seg.get(t.name) ?? new Map<string, { p50: number[]; p90: number[] }>();
        for (const [name, values] of segments(packets, t.ports)) {
          const s = bySegment.get(name) ?? { p50: [], p90: [] };
          s.p50.push(percentile(values, 50));
          s.p90.push(percentile(values, 90));
          bySegment.set(name, s);
        }
        seg.set(t.name, bySegment);
        process.stdout.write(`${t.name}: p50 ${round(median(plain.get(t.name)!.map((x) => x.p50Ms)), 3)} ms, under capture ${round(result.p50Ms, 3)} ms, ${packets.length} packets\n`);
      }
      await sleep(200);
    }

    const us = (target: string, name: string, which: 'p50' | 'p90') => {
      const s = seg.get(target)?.get(name);
      return s ? Math.round(median(s[which])) : NaN;
    };
    const cell = (target: string, name: string) => `${us(target, name, 'p50')} / ${us(target, name, 'p90')}`;
    const [direct, bareName, vivierName] = targets.map((t) => t.name) as [string, string, string];
    const p50 = (m: Map<string, LoadResult[]>, name: string) => median(m.get(name)!.map((x) => x.p50Ms));
    const hopSum = (target: string, hop: number) => us(target, `in:${hop}`, 'p50') + us(target, `out:${hop}`, 'p50');

    await writeSection(
      'timeline',
      `## One request, hop by hop, at one connection (issue 6)

Command: \`npm run bench:timeline -w @vivier/bench\` (${machineNote()}; needs tcpdump; one connection, closed loop, non-streamed,
${ROUNDS} rounds × ${SECONDS} s per target and per mode (plain, then under capture), alternating, after a ${WARMUP_SECONDS} s warm-up each; medians of the rounds).
Every party is its own process on the same 2 cores: the load generator, the provider simulator (zero latency, OpenAI protocol), the
bare proxy (\`tools/bench/src/bare-proxy.ts\`), and Vivier's gateway, auth and chat (\`NODE_ENV=production\`, API key, rate limits on, quota
and usage accounting on) with PostgreSQL, Redis and the dev Kafka broker. The kernel timestamps every packet on the loopback interface
(tcpdump): a hop's **in** is from the first packet of the request reaching it to the first packet it sends on; its **out** is from the
last packet of the answer reaching it to the last packet it sends back. What a hop does in between (waking up, parsing, its own work,
writing) is all in its share; the capture itself slows every party a little (the p50s under capture are given).

| target | p50 ms | p50 under capture, ms | added p50 over the simulator, ms |
| --- | --- | --- | --- |
${targets.map((t) => `| ${t.name} | **${round(p50(plain, t.name), 3)}** | ${round(p50(under, t.name), 3)} | ${t.name === direct ? '·' : round(p50(plain, t.name) - p50(plain, direct), 3)} |`).join('\n')}

Per hop under capture, µs, p50 / p90:

| segment | bare proxy → simulator | Vivier: gateway → chat → simulator |
| --- | --- | --- |
| first hop (proxy / gateway), in | ${cell(bareName, 'in:0')} | ${cell(vivierName, 'in:0')} |
| chat, in | · | ${cell(vivierName, 'in:1')} |
| the simulator (request in → answer out) | ${cell(bareName, 'provider')} | ${cell(vivierName, 'provider')} |
| chat, out | · | ${cell(vivierName, 'out:1')} |
| first hop (proxy / gateway), out | ${cell(bareName, 'out:0')} | ${cell(vivierName, 'out:0')} |
| the whole request at the first hop | ${cell(bareName, 'total')} | ${cell(vivierName, 'total')} |
| the load generator (answer → next request) | ${cell(bareName, 'client')} | ${cell(vivierName, 'client')} |

**Per hop, in + out (p50):** the bare proxy ${hopSum(bareName, 0)} µs; Vivier's gateway ${hopSum(vivierName, 0)} µs and chat ${hopSum(vivierName, 1)} µs,
so ${round(hopSum(vivierName, 0) / hopSum(bareName, 0), 2)}× and ${round(hopSum(vivierName, 1) / hopSum(bareName, 0), 2)}× a bare hop.
The simulator itself answers in ${us(direct, 'provider', 'p50')} µs when called directly (the load generator's packets), ${us(bareName, 'provider', 'p50')} µs behind the bare proxy
and ${us(vivierName, 'provider', 'p50')} µs behind chat: the same work, so the difference is what its surroundings cost it (likely the longer idle
time between requests: a process woken after a longer sleep starts slower).`,
    );
  } finally {
    for (const p of procs.reverse()) await stopProcess(p);
    for (const c of children) c.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
    await dev.stop();
    await infra.stop();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
