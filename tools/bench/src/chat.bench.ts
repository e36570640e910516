/**
 * Chat benchmark (issue 5): persisted chat turns per second over SSE, the time to first token the
 * platform adds to a provider, and the time to first token in a long chat against an empty one.
 *
 *   node --import tsx tools/bench/src/chat.bench.ts
 *
 * Starts its own test infrastructure (fresh database, Redis prefix, dev Kafka broker, S3), the
 * provider simulator (tools/provider-sim, its own process, zero latency) and the chat service as
 * its own process (apps/chat/src/main.ts), so it touches nothing else. Replies come from the
 * built-in `sim` provider at zero latency (turns/s, long chat) or from the provider simulator over
 * HTTP with the OpenAI protocol (TTFT against calling the simulator directly).
 * Results go to docs/benchmarks.md (section `chat`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { Pool } from 'undici';
import { ROOT, startServiceProcess, stopProcess, waitReady, type ServiceProcess, freePort } from '@vivier/dev-stack';
import { startTestInfrastructure } from '@vivier/dev-stack/test-infra';
import { BENCH_PROVIDER_KEY_ENCRYPTION_KEY } from './services';
import { machineNote, median, percentile, round, writeSection } from './stats';

const CONNECTIONS = Number(process.env.CONNECTIONS ?? 32);
const SECONDS = Number(process.env.SECONDS ?? 8);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const TTFT_SAMPLES = Number(process.env.TTFT_SAMPLES ?? 200);
const LONG_CHAT_TURNS = 500; // 1,000 messages
/** ONLY=turns|ttft|long runs one part (for profiling); the section is written only after a full run. */
const ONLY = process.env.ONLY;
const SECRET = 'bench-internal-identity-secret-0123456789';

/** The caller as the gateway vouches for it (service-kit's signed context: base64url JSON + HMAC-SHA256). */
function identity(userId: string): Record<string, string> {
  const context = { ip: '127.0.0.1', identity: { sub: userId, role: 'user', sid: randomUUID(), kind: 'access_token' }, exp: Math.floor(Date.now() / 1000) + 24 * 3600 };
  const payload = Buffer.from(JSON.stringify(context)).toString('base64url');
  return { 'x-vivier-context': payload, 'x-vivier-context-signature': createHmac('sha256', SECRET).update(payload).digest('base64url') };
}

async function startProviderSimProcess(): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'tools/provider-sim/src/cli.ts'), '--port', '0', '--log-size', '1'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const match = /^PROVIDER_SIM_URL=(\S+)/.exec(line);
      if (match) resolve(match[1]!);
    });
    child.once('exit', (code) => reject(new Error(`provider-sim exited with ${code}`)));
  });
  return { url, child };
}

/** Reads an SSE response until `done`/`error`; returns when the first delta arrived (ms from start) and the end. */
async function readTurn(pool: Pool, pathName: string, headers: Record<string, string>, body: unknown): Promise<{ ttftMs: number; totalMs: number; ok: boolean }> {
  const started = performance.now();
  const res = await pool.request({
    method: 'POST',
    path: pathName,
    headers: { ...headers, accept: 'text/event-stream', 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  let ttftMs = NaN;
  let text = '';
  let ok = false;
  for await (const chunk of res.body) {
    text += chunk.toString();
    if (Number.isNaN(ttftMs) && text.includes('event: delta')) ttftMs = performance.now() - started;
    if (text.includes('event: done')) ok = res.statusCode === 200;
  }
  return { ttftMs, totalMs: performance.now() - started, ok };
}

/** Time to the first content delta of a streamed OpenAI chat completion, straight from the simulator. */
async function directTtft(pool: Pool, content: string): Promise<number> {
  const started = performance.now();
  const res = await pool.request({
    method: 'POST',
    path: '/v1/chat/completions',
    headers: { authorization: 'Bearer sk-bench', 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', stream: true, stream_options: { include_usage: true }, max_completion_tokens: 4096, messages: [{ role: 'user', content }] }),
  });
  let ttft = NaN;
  let text = '';
  for await (const chunk of res.body) {
    text += chunk.toString();
    if (Number.isNaN(ttft) && /"delta":\{"content":"[^"]/.test(text)) ttft = performance.now() - started;
  }
  return ttft;
}

async function main(): Promise<void> {
  const infra = await startTestInfrastructure();
  const sim = await startProviderSimProcess();
  let chat: ServiceProcess | undefined;
  const db = new pg.Pool({ connectionString: infra.env.VIVIER_TEST_DATABASE_URL_CHAT, max: 2 });
  try {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vivier-chat-bench-'));
    const providersFile = path.join(dir, 'providers.json');
    writeFileSync(
      providersFile,
      JSON.stringify({
        providers: { sim: { tokensPerSecond: 0, firstTokenLatencyMs: 0 }, openai: { baseUrl: `${sim.url}/v1`, apiKey: 'sk-bench' } },
        // A model with an 8k window (the size the router assumes for models it does not know).
        deployments: [{ id: 'sim-8k', provider: 'sim', model: 'window-8k', contextWindow: 8192 }],
      }),
    );
    const port = await freePort();
    chat = startServiceProcess('chat', {
      port,
      env: {
        ...process.env,
        NODE_ENV: 'production',
        LOG_LEVEL: 'warn',
        DATABASE_URL: infra.env.VIVIER_TEST_DATABASE_URL_CHAT,
        DATABASE_POOL_MAX: '20',
        REDIS_URL: infra.env.REDIS_URL,
        REDIS_KEY_PREFIX: infra.env.VIVIER_TEST_REDIS_PREFIX,
        KAFKA_BROKERS: infra.env.KAFKA_BROKERS,
        KAFKA_PRODUCER_IDEMPOTENT: infra.env.KAFKA_PRODUCER_IDEMPOTENT,
        S3_ENDPOINT: infra.env.S3_ENDPOINT,
        S3_BUCKET: infra.env.S3_BUCKET,
        INTERNAL_IDENTITY_SECRET: SECRET,
        PROVIDER_KEY_ENCRYPTION_KEY: BENCH_PROVIDER_KEY_ENCRYPTION_KEY,
        PROVIDERS_FILE: providersFile,
        CHAT_DEFAULT_MODEL: 'sim/fast',
        // CHAT_NODE_OPTIONS=--cpu-prof … profiles the chat process.
        NODE_OPTIONS: process.env.CHAT_NODE_OPTIONS ?? '',
      },
    });
    await waitReady(chat);
    const origin = `http://127.0.0.1:${port}`;
    const http = new Pool(origin, { connections: CONNECTIONS + 4, pipelining: 1, keepAliveTimeout: 30_000 });
    const simHttp = new Pool(sim.url, { connections: 4, pipelining: 1, keepAliveTimeout: 30_000 });
    const json = async (method: string, pathName: string, headers: Record<string, string>, body?: unknown) => {
      const res = await http.request({ method: method as 'POST', path: pathName, headers: { ...headers, 'content-type': 'application/json' }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
      const text = await res.body.text();
      if (res.statusCode >= 300) throw new Error(`${method} ${pathName}: ${res.statusCode} ${text}`);
      return JSON.parse(text) as Record<string, unknown>;
    };
    const newChat = async (headers: Record<string, string>, model?: string) => (await json('POST', '/api/v1/chats', headers, model ? { model } : {})).id as string;

    // 1. Persisted turns per second over SSE: CONNECTIONS clients (one user each), each sending its
    //    next message as soon as the last reply's `done` arrived. Every fifth turn opens a new chat.
    const clients = Array.from({ length: CONNECTIONS }, () => identity(randomUUID()));
    const runLoad = async (durationMs: number) => {
      const chatsPerClient = await Promise.all(clients.map(async (headers) => ({ headers, chats: await Promise.all(Array.from({ length: 40 }, () => newChat(headers))) })));
      const before = Number((await db.query(`select count(*) from chat.messages where role = 'assistant' and status = 'completed'`)).rows[0].count);
      let turns = 0;
      let failures = 0;
      const latencies: number[] = [];
      const started = performance.now();
      const deadline = started + durationMs;
      await Promise.all(
        chatsPerClient.map(async ({ headers, chats }) => {
          let i = 0;
          while (performance.now() < deadline) {
            const chatId = chats[Math.floor(i / 5) % chats.length]!;
            i += 1;
            const turn = await readTurn(http, `/api/v1/chats/${chatId}/messages`, headers, { content: `Tell me something about topic ${i}` }).catch(() => ({ ok: false, totalMs: 0, ttftMs: NaN }));
            if (turn.ok) {
              turns += 1;
              latencies.push(turn.totalMs);
            } else failures += 1;
          }
        }),
      );
      const elapsed = (performance.now() - started) / 1000;
      const after = Number((await db.query(`select count(*) from chat.messages where role = 'assistant' and status = 'completed'`)).rows[0].count);
      return { perSecond: turns / elapsed, turns, persisted: after - before, failures, p50: percentile(latencies, 50), p99: percentile(latencies, 99) };
    };
    const rounds: Array<Awaited<ReturnType<typeof runLoad>>> = [];
    if (!ONLY || ONLY === 'turns') {
      process.stdout.write('warming up\n');
      await runLoad(3000);
    }
    for (let r = 0; r < ((!ONLY || ONLY === 'turns') ? ROUNDS : 0); r++) {
      const result = await runLoad(SECONDS * 1000);
      rounds.push(result);
      process.stdout.write(`round ${r + 1}/${ROUNDS}: ${Math.round(result.perSecond)} turns/s (${result.turns} turns, ${result.persisted} stored, ${result.failures} failed), p50 ${round(result.p50, 1)} ms, p99 ${round(result.p99, 1)} ms\n`);
      if (result.persisted !== result.turns) throw new Error(`round ${r + 1}: ${result.turns} turns answered but ${result.persisted} stored`);
    }
    const turnsPerSecond = median(rounds.map((r) => r.perSecond));

    // 2. TTFT added by the platform: the same one-message conversation, straight to the simulator
    //    (OpenAI protocol) and through the chat service (which calls the simulator the same way).
    const user = identity(randomUUID());
    const ttftChats = await Promise.all(Array.from({ length: TTFT_SAMPLES + 20 }, () => newChat(user, 'openai/gpt-4o-mini')));
    const direct: number[] = [];
    const platform: number[] = [];
    for (let i = 0; i < ((!ONLY || ONLY === 'ttft') ? TTFT_SAMPLES + 20 : 0); i++) {
      const content = `Tell me something about topic ${i}`;
      const d = await directTtft(simHttp, content);
      const p = (await readTurn(http, `/api/v1/chats/${ttftChats[i]}/messages`, user, { content })).ttftMs;
      if (i >= 20) {
        direct.push(d);
        platform.push(p);
      }
    }
    const added = platform.map((p, i) => p - direct[i]!);

    // 3. TTFT in a chat of 1,000 messages against an empty chat (built-in sim, no network to a provider).
    const longUser = identity(randomUUID());
    const longChats: Record<string, string> = {};
    for (const model of !ONLY || ONLY === 'long' ? ['sim/fast', 'sim/window-8k'] : []) {
      const id = await newChat(longUser, model);
      for (let i = 0; i < LONG_CHAT_TURNS; i++) await readTurn(http, `/api/v1/chats/${id}/messages`, longUser, { content: `Question number ${i}: tell me about rivers and lakes.` });
      longChats[model] = id;
    }
    const longResults: Array<{ model: string; empty: number[]; long: number[] }> = [];
    for (const model of !ONLY || ONLY === 'long' ? ['sim/fast', 'sim/window-8k'] : []) {
      const empty: number[] = [];
      const long: number[] = [];
      const emptyChats = await Promise.all(Array.from({ length: 120 }, () => newChat(longUser, model)));
      for (let i = 0; i < 120; i++) {
        const content = `Question number ${i}: tell me about rivers and lakes.`;
        const e = (await readTurn(http, `/api/v1/chats/${emptyChats[i]}/messages`, longUser, { content })).ttftMs;
        const l = (await readTurn(http, `/api/v1/chats/${longChats[model]}/messages`, longUser, { content })).ttftMs;
        if (i >= 20) {
          empty.push(e);
          long.push(l);
        }
      }
      longResults.push({ model, empty, long });
    }
    const fmt = (v: number) => round(v, 2);
    const [full = { model: '', empty: [], long: [] }, window8k = { model: '', empty: [], long: [] }] = longResults;
    const ratio = (r: (typeof longResults)[0]) => median(r.long) / median(r.empty);
    const historyTokens = longChats['sim/fast']
      ? Number((await db.query(`select coalesce(sum(context_tokens), 0) as n from chat.messages where chat_id = $1`, [longChats['sim/fast']])).rows[0].n)
      : 0;

    const markdown = `
## Chat: turns over SSE and time to first token (issue 5)

Command: \`node --import tsx tools/bench/src/chat.bench.ts\` (${machineNote()}; 2 cores shared by the load generator, the chat service,
PostgreSQL, Redis, the dev Kafka broker and the provider simulator; noisy: expect ±20 % between runs).
The chat service runs as its own process (\`NODE_ENV=production\`, \`LOG_LEVEL=warn\`, \`DATABASE_POOL_MAX=20\`), called directly (no gateway).

| measure | result | target |
| --- | --- | --- |
| persisted chat turns per second over SSE (built-in \`sim\`, zero latency; median of ${ROUNDS} × ${SECONDS} s) | **${Math.round(turnsPerSecond)} turns/s** | ≥ 500/s |
| time to first token added by the platform, p50 (through chat vs straight to the simulator, OpenAI protocol) | **${fmt(median(added))} ms** | ≤ 5 ms |
| time to first token, chat of 1,000 messages / empty chat, p50 (8k-token model) | **${fmt(ratio(window8k))}×** | ≤ 1.2× |
| time to first token, chat of 1,000 messages / empty chat, p50 (128k-token model: the whole history is sent) | ${fmt(ratio(full))}× | — |

**Turns.** ${CONNECTIONS} clients (one user each), closed loop: each \`POST /api/v1/chats/:id/messages\` with \`Accept: text/event-stream\`
is read to its \`done\` event before the client sends again (a new chat every 5 turns). A turn is: the chat read, the
history read, the quota reservation, one transaction (user message, reply \`streaming\`, \`message.created\` in the outbox),
the reply (one \`delta\` for the whole burst), the Redis journal and pub/sub fan-out, and one transaction at the end
(reply \`completed\`, quota settled, \`message.completed\` in the outbox); the outbox relay publishes both events to Kafka
meanwhile. Rounds: ${rounds.map((r) => `${Math.round(r.perSecond)}/s (p50 ${fmt(r.p50)} ms, p99 ${fmt(r.p99)} ms)`).join(', ')};
every answered turn was found stored \`completed\` in the database after each round.

**Time to first token** is measured by the client from sending the request to the first text (\`event: delta\` from chat;
the first non-empty \`delta.content\` chunk from the simulator), one request at a time, ${TTFT_SAMPLES} pairs alternating:
direct p50 ${fmt(median(direct))} ms / p99 ${fmt(percentile(direct, 99))} ms; through chat p50 ${fmt(median(platform))} ms / p99 ${fmt(percentile(platform, 99))} ms;
added p50 ${fmt(median(added))} ms, p99 ${fmt(percentile(added, 99))} ms. What chat does before the first token: read the chat, read the
history, count the message's tokens, reserve quota, write the turn (one transaction), take the reply's lease, then call the provider.

**Long chats.** A chat of ${LONG_CHAT_TURNS * 2} messages (≈ ${Math.round(historyTokens / 1000)}k tokens of history) against fresh chats, 100 pairs each:
8k-token model p50 ${fmt(median(window8k.empty))} ms empty vs ${fmt(median(window8k.long))} ms long (the newest messages that fit ≈ 4k tokens are read, in growing
batches, with their stored token counts: nothing is re-tokenised); 128k-token model p50 ${fmt(median(full.empty))} ms vs ${fmt(median(full.long))} ms, where
all ${LONG_CHAT_TURNS * 2} messages fit and are read and sent, so the cost grows with what the model is given, not with the chat's length.
`;
    if (!ONLY) await writeSection('chat', markdown);
    process.stdout.write(markdown);
    await http.close();
    await simHttp.close();
  } finally {
    await db.end();
    if (chat) await stopProcess(chat);
    sim.child.kill('SIGTERM');
    await infra.stop();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
