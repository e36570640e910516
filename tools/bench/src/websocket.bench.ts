/**
 * WebSocket benchmark (issue 6): 1,000 concurrent sockets through two gateway instances, each
 * receiving a streamed reply; every frame checked (none lost, none out of order, none twice); and
 * the gateway's memory per idle authenticated socket.
 *
 *   npm run bench:websocket -w @vivier/bench
 *
 * Starts its own infrastructure (fresh database, Redis prefix, S3), a dev Kafka broker, auth, chat
 * (built-in `sim` provider at 40 tokens/s, so replies stream for about a second and overlap) and
 * two gateways, each its own process. USERS users each open SOCKETS_PER_USER sockets, half on
 * each gateway; every user sends one message from one socket, and the reply streams to all of
 * that user's sockets on both gateways through Redis pub/sub.
 * Results go to docs/benchmarks.md (section `websocket`).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { freePort, startKafka, startServiceProcess, stopProcess, waitReady, type ServiceProcess } from '@vivier/dev-stack';
import { startTestInfrastructure } from '@vivier/dev-stack/test-infra';
import { gatewayEnv, serviceEnv } from './services';
import { machineNote, median, percentile, round, writeSection } from './stats';

const USERS = Number(process.env.USERS ?? 100);
const SOCKETS_PER_USER = Number(process.env.SOCKETS_PER_USER ?? 10);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const IDLE_SOCKETS = Number(process.env.IDLE_SOCKETS ?? 1000);
const REPLY = 'echo: ' + Array.from({ length: 40 }, (_, i) => `word${i}`).join(' ');

interface Frame {
  type: string;
  messageId?: string;
  seq?: number;
  requestId?: string;
}

class Socket {
  readonly frames: Frame[] = [];
  readonly ws: WebSocket;
  closed = false;
  constructor(url: string, token: string) {
    this.ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
    this.ws.on('message', (data) => this.frames.push(JSON.parse(data.toString()) as Frame));
    this.ws.on('close', () => (this.closed = true));
    this.ws.on('error', () => undefined);
  }
  async ready(): Promise<void> {
    await until(() => this.frames.some((f) => f.type === 'ready') || this.closed, 30_000);
    if (this.closed) throw new Error('socket closed before ready');
  }
  close(): void {
    this.ws.close();
  }
}

async function until(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Runs `task` over `items` with at most `limit` in flight. */
async function pooled<T, R>(items: T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await task(items[i]!);
      }
    }),
  );
  return results;
}

/**
 * The gateways run with `--expose-gc` and a one-line preload that collects garbage on SIGUSR2, so
 * the heap is read after a full collection (the figure is then what the sockets keep alive).
 */
const GC_ON_SIGNAL = `--expose-gc --import=data:text/javascript,process.on('SIGUSR2',()=>globalThis.gc())`;

async function gatewayMemory(gateway: ServiceProcess): Promise<{ rss: number; heap: number }> {
  gateway.child.kill('SIGUSR2');
  await new Promise((r) => setTimeout(r, 500));
  const origin = `http://127.0.0.1:${gateway.port}`;
  const text = await (await fetch(`${origin}/metrics`)).text();
  const read = (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { rss: read('process_resident_memory_bytes'), heap: read('nodejs_heap_size_used_bytes') };
}

async function main(): Promise<void> {
  const infra = await startTestInfrastructure();
  const dev = await startKafka();
  const procs: ServiceProcess[] = [];
  const open: Socket[] = [];
  try {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vivier-ws-bench-'));
    const providersFile = path.join(dir, 'providers.json');
    writeFileSync(providersFile, JSON.stringify({ providers: { sim: { tokensPerSecond: 40, firstTokenLatencyMs: 50 } } }));
    const base = serviceEnv(infra.env, dev.bootstrap);
    const [authPort, chatPort] = [await freePort(), await freePort()];
    const auth = startServiceProcess('auth', { port: authPort, env: { ...base, DATABASE_URL: infra.env.VIVIER_TEST_DATABASE_URL_AUTH, REGISTER_RATE_LIMIT_PER_IP: '1000000' } });
    const chat = startServiceProcess('chat', {
      port: chatPort,
      env: { ...base, DATABASE_URL: infra.env.VIVIER_TEST_DATABASE_URL_CHAT, PROVIDERS_FILE: providersFile, CHAT_DEFAULT_MODEL: 'sim/fast', DATABASE_POOL_MAX: '20' },
    });
    procs.push(auth, chat);
    await Promise.all([waitReady(auth), waitReady(chat)]);
    const gateways: string[] = [];
    const gatewayProcs: ServiceProcess[] = [];
    for (let i = 0; i < 2; i++) {
      const port = await freePort();
      const gw = startServiceProcess('gateway', {
        port,
        env: { ...gatewayEnv(base, authPort, chatPort), NODE_OPTIONS: GC_ON_SIGNAL },
      });
      procs.push(gw);
      gatewayProcs.push(gw);
      await waitReady(gw);
      gateways.push(`127.0.0.1:${port}`);
    }

    process.stdout.write(`registering ${USERS} users…\n`);
    const users = await pooled(Array.from({ length: USERS }, (_, i) => i), 4, async (i) => {
      const res = await fetch(`http://127.0.0.1:${authPort}/api/v1/auth/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: `ws-bench-${Date.now()}-${i}@example.test`, password: 'a benchmark password 42' }),
      });
      if (res.status !== 201) throw new Error(`register answered ${res.status}: ${await res.text()}`);
      const { accessToken } = (await res.json()) as { accessToken: string };
      const chatRes = await fetch(`http://${gateways[i % 2]}/api/v1/chats`, { method: 'POST', headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' }, body: '{}' });
      const { id } = (await chatRes.json()) as { id: string };
      return { token: accessToken, chatId: id };
    });

    // Memory per idle socket: each gateway before and after IDLE_SOCKETS / 2 authenticated sockets.
    const warm = new Socket(`ws://${gateways[0]}/api/v1/ws`, users[0]!.token);
    const warm2 = new Socket(`ws://${gateways[1]}/api/v1/ws`, users[0]!.token);
    await Promise.all([warm.ready(), warm2.ready()]);
    warm.close();
    warm2.close();
    await new Promise((r) => setTimeout(r, 2000));
    const before = await Promise.all(gatewayProcs.map((g) => gatewayMemory(g)));
    const idle = await pooled(Array.from({ length: IDLE_SOCKETS }, (_, i) => i), 50, async (i) => {
      const s = new Socket(`ws://${gateways[i % 2]}/api/v1/ws`, users[i % users.length]!.token);
      await s.ready();
      return s;
    });
    await new Promise((r) => setTimeout(r, 3000));
    const after = await Promise.all(gatewayProcs.map((g) => gatewayMemory(g)));
    const perSocket = gateways.map((_, g) => ({
      rss: (after[g]!.rss - before[g]!.rss) / (IDLE_SOCKETS / 2),
      heap: (after[g]!.heap - before[g]!.heap) / (IDLE_SOCKETS / 2),
    }));
    for (const s of idle) s.close();
    process.stdout.write(`idle sockets: ${perSocket.map((p) => `${round(p.rss / 1024)} KiB RSS / ${round(p.heap / 1024)} KiB heap`).join(', ')} per socket\n`);
    await new Promise((r) => setTimeout(r, 1000));

    // Streams: every user's sockets, half on each gateway; one message per user per round.
    const rounds: Array<{ sockets: number; frames: number; lost: number; outOfOrder: number; duplicated: number; incomplete: number; seconds: number; endP50: number; endP99: number }> = [];
    for (let round_ = 0; round_ < ROUNDS; round_++) {
      const sockets = users.map((u) => Array.from({ length: SOCKETS_PER_USER }, (_, k) => new Socket(`ws://${gateways[k % 2]}/api/v1/ws`, u.token)));
      open.push(...sockets.flat());
      await pooled(sockets.flat(), 100, (s) => s.ready());
      const started = performance.now();
      const ends: number[] = [];
      await Promise.all(
        users.map(async (u, i) => {
          const sender = sockets[i]![0]!;
          const requestId = `r-${round_}-${i}`;
          sender.ws.send(JSON.stringify({ type: 'chat.send', requestId, chatId: u.chatId, content: REPLY }));
          await until(() => sender.frames.some((f) => f.type === 'chat.accepted' && f.requestId === requestId), 60_000);
          const messageId = sender.frames.find((f) => f.type === 'chat.accepted' && f.requestId === requestId)!.messageId!;
          await Promise.all(
            sockets[i]!.map(async (s) => {
              await until(() => s.frames.some((f) => f.messageId === messageId && (f.type === 'chat.done' || f.type === 'chat.error')), 60_000).catch(() => undefined);
              ends.push(performance.now() - started);
            }),
          );
          (sockets[i] as Socket[] & { messageId?: string }).messageId = messageId;
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      let frames = 0;
      let lost = 0;
      let outOfOrder = 0;
      let duplicated = 0;
      let incomplete = 0;
      for (const userSockets of sockets) {
        const messageId = (userSockets as Socket[] & { messageId?: string }).messageId!;
        for (const s of userSockets) {
          const seqs = s.frames.filter((f) => f.messageId === messageId && f.seq !== undefined).map((f) => f.seq!);
          frames += seqs.length;
          const last = s.frames.find((f) => f.messageId === messageId && f.type === 'chat.done');
          if (!last) incomplete += 1;
          const highest = Math.max(0, ...seqs);
          lost += highest - new Set(seqs).size;
          duplicated += seqs.length - new Set(seqs).size;
          for (let k = 1; k < seqs.length; k++) if (seqs[k]! <= seqs[k - 1]!) outOfOrder += 1;
        }
      }
      rounds.push({ sockets: sockets.flat().length, frames, lost, outOfOrder, duplicated, incomplete, seconds, endP50: percentile(ends, 50), endP99: percentile(ends, 99) });
      process.stdout.write(
        `round ${round_ + 1}: ${sockets.flat().length} sockets, ${frames} frames in ${round(seconds, 2)} s; lost ${lost}, out of order ${outOfOrder}, twice ${duplicated}, incomplete ${incomplete}; reply end p50 ${round(percentile(ends, 50), 0)} ms p99 ${round(percentile(ends, 99), 0)} ms\n`,
      );
      for (const s of sockets.flat()) s.close();
      open.length = 0;
      await new Promise((r) => setTimeout(r, 1000));
    }

    const total = (k: 'frames' | 'lost' | 'outOfOrder' | 'duplicated' | 'incomplete') => rounds.reduce((n, r) => n + r[k], 0);
    const mib = (n: number) => `${round(n / 1024, 1)} KiB`;
    await writeSection(
      'websocket',
      `## WebSocket: 1,000 streams through two gateways (issue 6)

Command: \`npm run bench:websocket -w @vivier/bench\` (${machineNote()}; auth, chat and two gateways each their own process;
built-in \`sim\` provider at 40 tokens/s; dev Kafka broker; PostgreSQL 15 and Redis 7 local).

${USERS} users × ${SOCKETS_PER_USER} sockets (half on each gateway) = **${USERS * SOCKETS_PER_USER} concurrent sockets**; each user sends one
message per round from one socket and the reply (${REPLY.split(' ').length - 1} words, about one second of streaming) reaches all of the
user's sockets on both gateways through Redis pub/sub. ${ROUNDS} rounds; each frame's \`seq\` checked on every socket.

| measure | result | target |
| --- | --- | --- |
| frames delivered (all rounds) | ${total('frames')} | — |
| lost frames (gaps in \`seq\`) | **${total('lost')}** | 0 |
| out-of-order frames | **${total('outOfOrder')}** | 0 |
| frames delivered twice | **${total('duplicated')}** | 0 |
| sockets without \`chat.done\` | **${total('incomplete')}** | 0 |
| send → \`chat.done\` on every socket, p50 (median of rounds) | ${round(median(rounds.map((r) => r.endP50)), 0)} ms | — |
| send → \`chat.done\` on every socket, p99 (median of rounds) | ${round(median(rounds.map((r) => r.endP99)), 0)} ms | — |
| gateway memory per idle authenticated socket, RSS (two gateways, ${IDLE_SOCKETS / 2} sockets each) | ${perSocket.map((p) => mib(p.rss)).join(', ')} | — |
| gateway memory per idle authenticated socket, V8 heap | ${perSocket.map((p) => mib(p.heap)).join(', ')} | — |

Rounds: ${rounds.map((r) => `${r.frames} frames in ${round(r.seconds, 2)} s`).join('; ')}. Memory is read from each gateway's \`/metrics\`
(\`process_resident_memory_bytes\`, \`nodejs_heap_size_used_bytes\`) before and 3 s after opening the idle sockets, each time after a
full garbage collection (the bench starts the gateways with \`--expose-gc\` and a preload that collects on SIGUSR2); RSS also
holds the sockets' kernel-side and native buffers as the allocator keeps them, so it is the noisier figure. Baseline in the same run: the reply's own duration at 40 tokens/s is
about ${round(((REPLY.split(' ').length - 1) / 40) * 1000, 0)} ms plus 50 ms to the first token.`,
    );
  } finally {
    for (const s of open) s.close();
    for (const p of procs.reverse()) await stopProcess(p);
    await dev.stop();
    await infra.stop();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
