/**
 * Scale-out run (issue 9): the two-instance platform (two gateways, chats, admins and workers,
 * one auth, three dev Kafka brokers, PostgreSQL, Redis, S3, the provider simulator) under a
 * synthetic population, then a soak at half the rate.
 *
 *   npm run bench:scale -w @vivier/bench
 *
 * 1. USERS users register (through the gateways) and each opens a chat.
 * 2. After a warm-up (WARMUP_SECONDS at 25/s), probe: open-loop load at growing rates (PROBE_SECONDS each) until p99 passes 1 s, a request
 *    fails or the rate is not reached; the run rate is the highest that held (capped at 1,160
 *    requests/s, the seed document's 10M requests/day × 10), or RATE when given.
 * 3. Run: DURATION_SECONDS at that rate. Requests: 60 % a chat message read to its end over SSE
 *    (the simulator's first token after 20 ms, 200 tokens/s), 25 % the chat list, 15 % a chat's
 *    messages. Every SAMPLE_SECONDS: each process's RSS and CPU (/proc), and consumer lag.
 * 4. Soak: SOAK_SECONDS at half the rate; memory growth per service = slope of RSS over the soak's
 *    second half (after warm-up), least squares, MiB/min.
 * 5. Audit: every message answered once, admin's usage equal to chat's, no outbox row left.
 */
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { Pool } from 'undici';
import { Platform, type AuditReport, type Instance } from '@vivier/dev-stack/platform';
import { startTestInfrastructure } from '@vivier/dev-stack/test-infra';
import { cpuSeconds } from './cpu';
import { machineNote, median, percentile, round, writeSection } from './stats';

const USERS = Number(process.env.USERS ?? 1000);
const PROBE_SECONDS = Number(process.env.PROBE_SECONDS ?? 20);
const DURATION_SECONDS = Number(process.env.DURATION_SECONDS ?? 600);
const SOAK_SECONDS = Number(process.env.SOAK_SECONDS ?? 1800);
const SAMPLE_SECONDS = Number(process.env.SAMPLE_SECONDS ?? 5);
const WARMUP_SECONDS = Number(process.env.WARMUP_SECONDS ?? 20);
const TARGET_RATE = 1160;
const MAX_IN_FLIGHT = 4000;

type Kind = 'message' | 'list' | 'history';
interface User {
  headers: Record<string, string>;
  chatId: string;
}
interface Result {
  kind: Kind;
  start: number;
  ms: number;
  ttftMs?: number;
  ok: boolean;
}

const say = (line: string) => process.stdout.write(`${line}\n`);

async function json(pool: Pool, method: string, path: string, headers: Record<string, string>, body?: unknown): Promise<{ status: number; body: unknown }> {
  const res = await pool.request({ method: method as 'GET', path, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await res.body.text();
  return { status: res.statusCode, body: text ? (JSON.parse(text) as unknown) : undefined };
}

/** One request of the mix; never throws. */
async function request(pool: Pool, user: User, kind: Kind, n: number): Promise<Result> {
  const start = performance.now();
  try {
    if (kind === 'message') {
      const res = await pool.request({
        method: 'POST',
        path: `/api/v1/chats/${user.chatId}/messages`,
        headers: { ...user.headers, accept: 'text/event-stream' },
        body: JSON.stringify({ content: `Question ${n}: what is worth knowing about rivers?` }),
      });
      let ttftMs: number | undefined;
      let tail = '';
      let done = false;
      for await (const chunk of res.body) {
        // What came before this chunk's start is kept only as far as an event name can straddle it.
        const text = tail + chunk.toString();
        if (ttftMs === undefined && text.includes('event: delta')) ttftMs = performance.now() - start;
        if (text.includes('event: done')) done = true;
        tail = text.slice(-16);
      }
      return { kind, start, ms: performance.now() - start, ...(ttftMs === undefined ? {} : { ttftMs }), ok: res.statusCode === 200 && done };
    }
    const path = kind === 'list' ? '/api/v1/chats?limit=20' : `/api/v1/chats/${user.chatId}/messages?limit=50`;
    const res = await pool.request({ method: 'GET', path, headers: { authorization: user.headers.authorization! } });
    await res.body.text();
    return { kind, start, ms: performance.now() - start, ok: res.statusCode === 200 };
  } catch {
    return { kind, start, ms: performance.now() - start, ok: false };
  }
}

/** Open-loop load: `rate` requests/s for `seconds`, spread evenly, whatever the answers take. */
async function load(pools: Pool[], users: User[], rate: number, seconds: number): Promise<{ results: Result[]; late: number }> {
  const results: Result[] = [];
  const running = new Set<Promise<void>>();
  const total = Math.round(rate * seconds);
  const started = performance.now();
  let late = 0;
  for (let i = 0; i < total; i++) {
    const due = started + (i / rate) * 1000;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    if (running.size >= MAX_IN_FLIGHT) {
      late += 1; // the platform is this far behind: counted, not sent
      continue;
    }
    const roll = (i * 7919) % 100;
    const kind: Kind = roll < 60 ? 'message' : roll < 85 ? 'list' : 'history';
    const p = request(pools[i % pools.length]!, users[(i * 104_729) % users.length]!, kind, i).then((r) => {
      results.push(r);
      running.delete(p);
    });
    running.add(p);
  }
  await Promise.all(running);
  return { results, late };
}

function summary(results: Result[], late: number, seconds: number) {
  const ok = results.filter((r) => r.ok);
  const ms = results.map((r) => r.ms);
  const ttft = results.flatMap((r) => (r.ttftMs === undefined ? [] : [r.ttftMs]));
  return {
    requests: results.length,
    perSecond: ok.length / seconds,
    errors: results.length - ok.length,
    late,
    p50: percentile(ms, 50),
    p99: percentile(ms, 99),
    ttftP50: percentile(ttft, 50),
    ttftP99: percentile(ttft, 99),
  };
}

interface Sample {
  at: number;
  rssMiB: Record<string, number>;
  cpuSeconds: Record<string, number>;
  lag: Record<string, number>;
}

function procStats(pid: number): { rssMiB: number; cpuSeconds: number } {
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { rssMiB: Number(rss?.[1] ?? 0) / 1024, cpuSeconds: cpuSeconds(pid) };
}

async function consumerLag(instances: Instance[]): Promise<Record<string, number>> {
  const lag: Record<string, number> = {};
  for (const instance of instances) {
    if (instance.service === 'gateway') continue;
    try {
      const text = await (await fetch(`http://127.0.0.1:${instance.port}/metrics`)).text();
      for (const m of text.matchAll(/^vivier_consumer_lag_messages\{([^}]*)\} (\d+(?:\.\d+)?)/gm)) {
        const group = /group="([^"]+)"/.exec(m[1]!)?.[1] ?? '?';
        lag[group] = (lag[group] ?? 0) + Number(m[2]);
      }
    } catch {
      // an instance that does not answer has no lag to report this time
    }
  }
  return lag;
}

function sampler(platform: Platform): { samples: Sample[]; stop: () => Promise<void> } {
  const samples: Sample[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const instances = [...platform.instances.values()];
      const sample: Sample = { at: Date.now(), rssMiB: {}, cpuSeconds: {}, lag: await consumerLag(instances) };
      for (const instance of instances) {
        const stats = procStats(instance.proc.child.pid!);
        sample.rssMiB[instance.name] = stats.rssMiB;
        sample.cpuSeconds[instance.name] = stats.cpuSeconds;
      }
      samples.push(sample);
      await new Promise((r) => setTimeout(r, SAMPLE_SECONDS * 1000));
    }
  })();
  return {
    samples,
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}

/** Least-squares slope of y over x. */
function slope(points: Array<[number, number]>): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  const num = points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0);
  const den = points.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  return den === 0 ? 0 : num / den;
}

function perService(window: Sample[]): Array<{ name: string; rssMiB: number; cpuPercent: number }> {
  const first = window[0]!;
  const last = window.at(-1)!;
  const seconds = (last.at - first.at) / 1000;
  return Object.keys(last.rssMiB).map((name) => ({
    name,
    rssMiB: last.rssMiB[name]!,
    cpuPercent: seconds > 0 ? ((last.cpuSeconds[name]! - (first.cpuSeconds[name] ?? 0)) / seconds) * 100 : 0,
  }));
}

async function main(): Promise<void> {
  const infra = await startTestInfrastructure();
  Object.assign(process.env, infra.env);
  const platform = await Platform.start({
    label: 'scale',
    // Tokens outlive the run; the population signs in once.
    env: { ACCESS_TOKEN_TTL_SECONDS: String(DURATION_SECONDS + SOAK_SECONDS + 3600), DATABASE_POOL_MAX: '20' },
  });
  const gateways = platform.of('gateway').map((g) => new Pool(platform.url(g.name), { connections: 512, pipelining: 1, keepAliveTimeout: 30_000 }));
  try {
    say(`platform up: ${[...platform.instances.keys()].join(', ')}`);
    const users: User[] = [];
    for (let i = 0; i < USERS; i += 20) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(20, USERS - i) }, async (_, j) => {
          const pool = gateways[(i + j) % gateways.length]!;
          const reg = await json(pool, 'POST', '/api/v1/auth/register', { 'content-type': 'application/json' }, { email: `scale-${randomUUID().slice(0, 12)}@example.com`, password: 'a password for the scale run' });
          if (reg.status !== 201) throw new Error(`register: ${reg.status} ${JSON.stringify(reg.body)}`);
          const headers = { authorization: `Bearer ${(reg.body as { accessToken: string }).accessToken}`, 'content-type': 'application/json' };
          const chat = await json(pool, 'POST', '/api/v1/chats', headers, {});
          if (chat.status !== 201) throw new Error(`new chat: ${chat.status}`);
          return { headers, chatId: (chat.body as { id: string }).id };
        }),
      );
      users.push(...batch);
    }
    say(`${users.length} users, one chat each`);

    // Warm-up (JIT, pools, the consumer groups' first fetches), not measured.
    await load(gateways, users, 25, WARMUP_SECONDS);

    // 2. The highest rate that holds.
    let rate = Number(process.env.RATE ?? 0);
    const probes: Array<{ rate: number } & ReturnType<typeof summary>> = [];
    if (!rate) {
      for (let probe = 50; ; probe = Math.min(TARGET_RATE, Math.round(probe * 1.5))) {
        const { results, late } = await load(gateways, users, probe, PROBE_SECONDS);
        const s = summary(results, late, PROBE_SECONDS);
        probes.push({ rate: probe, ...s });
        say(`probe ${probe}/s: ${round(s.perSecond)} ok/s, p50 ${round(s.p50)} ms, p99 ${round(s.p99)} ms, errors ${s.errors}, late ${s.late}`);
        if (s.p99 > 1000 || s.errors > 0 || s.late > 0 || s.perSecond < probe * 0.95) break;
        rate = probe;
        if (probe === TARGET_RATE) break;
      }
      rate ||= 50;
    }

    // 3. The run.
    const runSampler = sampler(platform);
    const run = await load(gateways, users, rate, DURATION_SECONDS);
    await runSampler.stop();
    const runSummary = summary(run.results, run.late, DURATION_SECONDS);
    const byKind = (kind: Kind) => run.results.filter((r) => r.kind === kind).map((r) => r.ms);
    say(`run ${rate}/s for ${DURATION_SECONDS} s: ${JSON.stringify(runSummary)}`);

    // 4. The soak.
    const soakSampler = sampler(platform);
    const soak = await load(gateways, users, rate / 2, SOAK_SECONDS);
    await soakSampler.stop();
    const soakSummary = summary(soak.results, soak.late, SOAK_SECONDS);
    const secondHalf = soakSampler.samples.slice(Math.floor(soakSampler.samples.length / 2));
    const growth = Object.keys(secondHalf.at(-1)!.rssMiB).map((name) => ({
      name,
      miBPerMinute: slope(secondHalf.map((s) => [(s.at - secondHalf[0]!.at) / 60_000, s.rssMiB[name]!])),
    }));
    say(`soak ${rate / 2}/s for ${SOAK_SECONDS} s: ${JSON.stringify(soakSummary)}; growth ${JSON.stringify(growth)}`);

    // 5. Audit (once things settled; the figures above are written whatever it finds).
    const settled = (r: AuditReport) => r.stuck.length === 0 && r.unanswered.length === 0 && r.chatUsage.replies === r.adminUsage.replies && Object.values(r.outbox).every((n) => n === 0);
    let report = await platform.audit();
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline && !settled(report)) {
      await new Promise((r) => setTimeout(r, 1000));
      report = await platform.audit();
    }
    const auditOk = report.stuck.length === 0 && report.unanswered.length === 0 && report.chatUsage.replies === report.adminUsage.replies && report.chatUsage.tokensOut === report.adminUsage.tokensOut && report.deadLetters === 0;
    say(`audit: ${JSON.stringify({ ...report, unanswered: report.unanswered.length, stuck: report.stuck.length })}`);

    const maxLag = (samples: Sample[]) => {
      const groups = new Set(samples.flatMap((s) => Object.keys(s.lag)));
      return [...groups].map((g) => `${g} ${Math.max(...samples.map((s) => s.lag[g] ?? 0))}`).join(', ') || 'none reported';
    };
    const runServices = perService(runSampler.samples);
    const soakServices = perService(soakSampler.samples);
    const fmt = (n: number) => round(n, 1);
    await writeSection(
      'scale',
      `## Scale-out run and soak (issue 9)

Command: \`npm run bench:scale -w @vivier/bench\` (${machineNote()}; USERS=${USERS}, DURATION_SECONDS=${DURATION_SECONDS},
SOAK_SECONDS=${SOAK_SECONDS}). Everything on one 2-core machine: two instances each of gateway, chat, admin and worker
plus auth (each its own Node process), three dev Kafka brokers, PostgreSQL, Redis, S3, the provider simulator and the
load generator. Gateways are called round-robin; chat, admin and auth instances behind loopback proxies, as behind a
Kubernetes Service.

${users.length} users, each with a chat. Open-loop load (requests are sent on schedule whatever the answers take):
60 % a chat message read to its end over SSE (simulated provider: first token after 20 ms, 200 tokens/s), 25 % the chat
list, 15 % a chat's messages. ${process.env.RATE ? `Rate given: ${rate}/s.` : `The rate is the highest of the probes (${PROBE_SECONDS} s each) that held p99 under 1 s with no error, capped at ${TARGET_RATE}/s (10M requests/day × 10): ${probes.map((p) => `${p.rate}/s → p99 ${fmt(p.p99)} ms${p.errors ? `, ${p.errors} errors` : ''}`).join('; ')}.`}

| measure | run: ${rate}/s for ${DURATION_SECONDS / 60} min | soak: ${rate / 2}/s for ${SOAK_SECONDS / 60} min | target |
| --- | --- | --- | --- |
| answered requests/s | **${fmt(runSummary.perSecond)}** | ${fmt(soakSummary.perSecond)} | 1,160/s where the machine allows |
| latency p50 / p99 (all requests) | ${fmt(runSummary.p50)} / **${fmt(runSummary.p99)} ms** | ${fmt(soakSummary.p50)} / ${fmt(soakSummary.p99)} ms | p99 < 1 s |
| time to first token p50 / p99 (messages) | ${fmt(runSummary.ttftP50)} / ${fmt(runSummary.ttftP99)} ms | ${fmt(soakSummary.ttftP50)} / ${fmt(soakSummary.ttftP99)} ms | — |
| errors (non-200, stream without \`done\`) | **${runSummary.errors}** of ${runSummary.requests} | ${soakSummary.errors} of ${soakSummary.requests} | 0 |
| not sent (generator ${MAX_IN_FLIGHT} in flight) | ${runSummary.late} | ${soakSummary.late} | 0 |
| consumer lag, highest sample (messages) | ${maxLag(runSampler.samples)} | ${maxLag(soakSampler.samples)} | — |

Run, by kind: message p50 ${fmt(median(byKind('message')))} / p99 ${fmt(percentile(byKind('message'), 99))} ms; chat list p50 ${fmt(median(byKind('list')))} / p99 ${fmt(percentile(byKind('list'), 99))} ms;
messages page p50 ${fmt(median(byKind('history')))} / p99 ${fmt(percentile(byKind('history'), 99))} ms.

| process | run: RSS / CPU | soak: RSS / CPU | soak memory growth (second half) |
| --- | --- | --- | --- |
${runServices.map((s) => {
  const soaked = soakServices.find((x) => x.name === s.name)!;
  const g = growth.find((x) => x.name === s.name)!;
  return `| ${s.name} | ${fmt(s.rssMiB)} MiB / ${fmt(s.cpuPercent)} % | ${fmt(soaked.rssMiB)} MiB / ${fmt(soaked.cpuPercent)} % | ${round(g.miBPerMinute, 2)} MiB/min |`;
}).join('\n')}

Memory growth target: ≤ 1 MiB/min per service. CPU is per process, of one core (200 % = the whole machine).
Audit after the soak: ${report.userMessages} user messages, ${report.unanswered.length} without exactly one final reply, ${report.stuck.length} stuck;
replies ${JSON.stringify(report.replies)}; chat counted ${report.chatUsage.replies} replies / ${report.chatUsage.tokensIn} + ${report.chatUsage.tokensOut} tokens,
admin ${report.adminUsage.replies} / ${report.adminUsage.tokensIn} + ${report.adminUsage.tokensOut}; ${report.deadLetters} dead letters; unpublished outbox rows ${JSON.stringify(report.outbox)}: **${auditOk ? 'holds' : 'does not hold'}**.
`,
    );
  } finally {
    for (const pool of gateways) await pool.close();
    await platform.stop();
    await infra.stop();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
