import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { startProviderSim, type ProviderSim } from '@vivier/provider-sim';
import { verifyInternalCall } from '@vivier/service-kit';
import { createEvent, EVENTS, type JobsCompletionRequestedData, type WorkerCompletionFinishedData } from '@vivier/contracts';
import { DEFAULT_CONTEXT_WINDOW, DEV_PROVIDER_KEY_ENCRYPTION_KEY, sealEventSecret } from '@vivier/providers';
import { LogCapture, testAdminDatabaseUrl } from '@vivier/service-kit/testing';
import { UNKNOWN_PROVIDER_ATTEMPTS } from '../src/modules/completions/completion.consumer';
import { exportHandlers } from '../src/modules/exports/export.consumer';
import { createDatabase } from '@vivier/service-kit';
import { HandlerTimedOut } from '@vivier/messaging';
import { workerTables } from '@vivier/db-worker';
import { eventually, handled, outboxEvents, sleep, startWorker, TestKafka, workerPool, writeProvidersFile, type TestWorker } from './helpers';

const FINISHED = 'vivier.worker.completion.finished.v1';
const TITLE = 'vivier.worker.title.generated.v1';
const EXPORT_READY = 'vivier.worker.export.ready.v1';
const EXPORT_FAILED = 'vivier.worker.export.failed.v1';
const SECRET = 'test-internal-identity-secret-0123456789';

/** A chat's summary source as a test scripts it: the query chat was asked with, and the answer. */
type SummaryAnswer = (query: URLSearchParams, res: ServerResponse) => void;

/**
 * The upstream contracts the worker's chat clients are written against, as chat must implement
 * them, both signed internal calls: `GET /internal/v1/users/:userId/export` (NDJSON lines
 * `{type:'chat'|'message'|'file', ...}`, users scripted per test) and
 * `GET /internal/v1/chats/:id/summary-source` (JSON, chats scripted per test).
 */
function startChatInternalServer(
  script: Map<string, (res: ServerResponse) => void>,
  calls: Map<string, number>,
  summaries: Map<string, SummaryAnswer>,
): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://chat.internal');
    const source = /^\/internal\/v1\/chats\/([^/]+)\/summary-source$/.exec(url.pathname);
    const match = /^\/internal\/v1\/users\/([^/]+)\/export$/.exec(url.pathname);
    if (req.method !== 'GET' || (!match && !source)) return void res.writeHead(404).end();
    if (!verifyInternalCall(req.headers, SECRET)) return void res.writeHead(403).end('{"code":"forbidden"}');
    if (source) {
      const answer = summaries.get(decodeURIComponent(source[1]!));
      if (!answer) return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"code":"not_found"}');
      return answer(url.searchParams, res);
    }
    const userId = decodeURIComponent(match![1]!);
    calls.set(userId, (calls.get(userId) ?? 0) + 1);
    const answer = script.get(userId);
    if (!answer) return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"code":"user_not_found"}');
    answer(res);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      resolve({ server, url: `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}` });
    });
  });
}

// Everything that consumes as the `worker` group lives in this one file, so that no other test
// file's worker (with other providers) takes partitions of the group.
describe('worker consumers', () => {
  let sim: ProviderSim;
  let worker: TestWorker;
  let pool: pg.Pool;
  let kafka: TestKafka;
  let chatServer: Server;
  const exportScript = new Map<string, (res: ServerResponse) => void>();
  const exportCalls = new Map<string, number>();
  const summaryScript = new Map<string, SummaryAnswer>();
  const logs = new LogCapture();

  beforeAll(async () => {
    const upstream = await startChatInternalServer(exportScript, exportCalls, summaryScript);
    chatServer = upstream.server;
    sim = await startProviderSim({ port: 0 });
    const file = writeProvidersFile({
      providers: {
        openai: { baseUrl: `${sim.url}/v1`, apiKey: 'sk-test' },
        sim: { tokensPerSecond: 0, firstTokenLatencyMs: 0 },
        // A key the simulator refuses, as OpenAI does ("Incorrect API key provided").
        revoked: { kind: 'openai_compatible', baseUrl: `${sim.url}/v1`, apiKey: 'invalid-platform-key' },
      },
      deployments: [{ id: 'small-window', provider: 'openai', model: 'small-window', contextWindow: 2000 }],
      router: { backoffBaseMs: 10, backoffMaxMs: 50, maxRetries: 1 },
    });
    worker = await startWorker({
      PROVIDERS_FILE: file,
      CONSUMER_RETRY_ATTEMPTS: '3',
      CONSUMER_RETRY_DELAY_MS: '100',
      CONSUMER_RETRY_MAX_DELAY_MS: '400',
      COMPLETION_LEASE_MS: '2000',
      // Above the longest handler of these tests (a takeover waits 1.5 leases, 3 s), below a hung call.
      CONSUMER_HANDLER_TIMEOUT_MS: '5000',
      TITLE_TIMEOUT_MS: '1500',
      CHAT_URL: upstream.url,
      INTERNAL_IDENTITY_SECRET: SECRET,
      EXPORT_RETENTION_HOURS: '24',
      // Providers set through the admin API are untrusted: the simulator's address must be allowed.
      PROVIDER_ALLOWED_HOSTS: '127.0.0.1',
      // Every line kept, at the most verbose level: an admin-set provider key must appear in none.
      LOG_LEVEL: 'trace',
    }, { maintenance: false, logStream: logs });
    pool = workerPool(worker.config);
    kafka = new TestKafka(worker.config.KAFKA_BROKERS);
  });
  afterAll(async () => {
    await kafka?.close();
    await worker?.close();
    await pool?.end();
    await sim?.close();
    chatServer?.close();
  });

  function completionRequest(model: string, overrides: Partial<JobsCompletionRequestedData> = {}): JobsCompletionRequestedData {
    return {
      chatId: randomUUID(),
      userId: randomUUID(),
      userMessageId: randomUUID(),
      assistantMessageId: randomUUID(),
      model,
      systemPrompt: 'You are terse.',
      messages: [
        { role: 'user', content: 'Hello there' },
        { role: 'assistant', content: 'Hi.' },
        { role: 'user', content: 'Plan three days in Lisbon, please.' },
      ],
      regenerate: false,
      ...overrides,
    };
  }

  const finishedOf = async (assistantMessageId: string) =>
    (await outboxEvents(pool, FINISHED, assistantMessageId)).map((e) => e.data as WorkerCompletionFinishedData);

  describe('async completions (jobs.completion)', () => {
    it('calls the provider with the context of the event and publishes completion.finished with content and usage', async () => {
      const model = `happy-${randomUUID().slice(0, 8)}`;
      const data = completionRequest(`openai/${model}`, { maxOutputTokens: 50 });
      const published = await kafka.collect('worker.events');
      await kafka.produce(createEvent(EVENTS.jobsCompletionRequested, data));

      const [finished] = await eventually(async () => {
        const rows = await finishedOf(data.assistantMessageId);
        return rows.length > 0 && rows;
      });
      expect(finished).toMatchObject({
        assistantMessageId: data.assistantMessageId,
        chatId: data.chatId,
        userId: data.userId,
        userMessageId: data.userMessageId,
        status: 'completed',
        provider: 'openai',
        model: `openai/${model}`,
      });
      expect(finished!.content.length).toBeGreaterThan(0);
      expect(finished!.usage.promptTokens).toBeGreaterThan(0);
      expect(finished!.usage.completionTokens).toBeGreaterThan(0);
      expect(finished!.error).toBeUndefined();

      // The provider got the system prompt and the whole context, in order.
      const sent = sim.requests().filter((r) => r.model === model);
      expect(sent).toHaveLength(1);
      const body = sent[0]!.body as { messages: Array<{ role: string; content: string }>; max_completion_tokens?: number };
      expect(body.messages.map((m) => m.role)).toEqual(['system', 'user', 'assistant', 'user']);
      expect(body.messages[3]!.content).toBe('Plan three days in Lisbon, please.');

      const { rows } = await pool.query('select state, attempts, published_at from worker.jobs where assistant_message_id = $1', [data.assistantMessageId]);
      expect(rows).toEqual([expect.objectContaining({ state: 'finished', attempts: 1 })]);
      expect(rows[0].published_at).not.toBeNull();

      // The relay puts it on worker.events, keyed by chat, for chat to store.
      const onKafka = await eventually(() => published.find((r) => r.event.type === FINISHED && r.event.subject === data.assistantMessageId));
      expect(onKafka.event.data).toEqual(finished);
      expect(onKafka.event.source).toBe('vivier/worker');
    });

    it('calls the provider once and publishes once when the job is delivered twice (same event, and a copy with a new id)', async () => {
      const model = `twice-${randomUUID().slice(0, 8)}`;
      const data = completionRequest(`openai/${model}`);
      const event = createEvent(EVENTS.jobsCompletionRequested, data);
      await kafka.produce(event);
      await kafka.produce(event);
      await eventually(async () => (await finishedOf(data.assistantMessageId)).length > 0);
      // Chat re-sending the same job under a new event id (e.g. after a crash of its own).
      const copy = createEvent(EVENTS.jobsCompletionRequested, data);
      await kafka.produce(copy);
      await handled(pool, copy.id);
      await sleep(3000);

      expect(await finishedOf(data.assistantMessageId)).toHaveLength(1);
      expect(sim.requests().filter((r) => r.model === model)).toHaveLength(1);
      expect(sim.stats().byModel[model]).toBe(1);
    });

    it('retries a provider that keeps failing, then publishes completion.finished failed and parks the job on the dead-letter topic', async () => {
      const model = `down-${randomUUID().slice(0, 8)}`;
      sim.setFaults({ status5xx: 503 }, model);
      const dlq = await kafka.collect('jobs.completion.dlq.worker');
      const data = completionRequest(`openai/${model}`);
      const event = createEvent(EVENTS.jobsCompletionRequested, data);
      await kafka.produce(event);

      const parked = await eventually(() => dlq.find((r) => r.event.id === event.id), 60_000);
      expect(parked.headers['vivier-dead-letter-reason']).toBe('handler_failed');
      expect(parked.headers['vivier-original-topic']).toBe('jobs.completion');

      const finished = await eventually(async () => {
        const rows = await finishedOf(data.assistantMessageId);
        return rows.length > 0 && rows;
      });
      expect(finished).toHaveLength(1);
      expect(finished[0]).toMatchObject({ status: 'failed', provider: 'openai', content: '', error: { code: 'provider_unavailable' } });
      expect(finished[0]!.error!.detail.length).toBeGreaterThan(0);

      // Three attempts (CONSUMER_RETRY_ATTEMPTS), each one routed call with the router's own retry
      // (at most 2 requests each; the router's circuit breaker may open after 5 failures in a row).
      const { rows } = await pool.query('select state, attempts from worker.jobs where assistant_message_id = $1', [data.assistantMessageId]);
      expect(rows).toEqual([{ state: 'finished', attempts: 3 }]);
      expect(sim.stats().byModel[model]).toBeGreaterThanOrEqual(3);
      expect(sim.stats().byModel[model]).toBeLessThanOrEqual(6);
    });

    it('fails a job whose provider refuses the key at once, provider_auth_failed, without retrying it', async () => {
      const model = `refused-${randomUUID().slice(0, 8)}`;
      const data = completionRequest(`revoked/${model}`);
      const event = createEvent(EVENTS.jobsCompletionRequested, data);
      await kafka.produce(event);
      await handled(pool, event.id);
      const finished = await finishedOf(data.assistantMessageId);
      expect(finished).toHaveLength(1);
      expect(finished[0]).toMatchObject({ status: 'failed', content: '', provider: 'revoked', error: { code: 'provider_auth_failed' } });
      // The vendor's own words ("Incorrect API key provided: invalid****") stay in the logs.
      expect(finished[0]!.error!.detail).not.toMatch(/invalid/);
      const { rows } = await pool.query('select state, attempts from worker.jobs where assistant_message_id = $1', [data.assistantMessageId]);
      expect(rows).toEqual([{ state: 'finished', attempts: 1 }]);
      // One request (refused before the simulator reads the model, so found by its body).
      expect(sim.requests().filter((r) => (r.body as { model?: string } | undefined)?.model === model)).toHaveLength(1);
    });

    it('ends a provider call at the handler deadline, retries it, and on the last attempt publishes completion.finished failed', async () => {
      const model = `hung-${randomUUID().slice(0, 8)}`;
      sim.setFaults({ latencyMs: 60_000 }, model);
      const dlq = await kafka.collect('jobs.completion.dlq.worker');
      const data = completionRequest(`openai/${model}`);
      const event = createEvent(EVENTS.jobsCompletionRequested, data);
      await kafka.produce(event);

      // Three attempts (CONSUMER_RETRY_ATTEMPTS), each ended at CONSUMER_HANDLER_TIMEOUT_MS (5 s).
      const finished = await eventually(async () => {
        const rows = await finishedOf(data.assistantMessageId);
        return rows.length > 0 && rows;
      }, 60_000);
      expect(finished).toHaveLength(1);
      expect(finished[0]).toMatchObject({ status: 'failed', content: '', error: { code: 'provider_timeout' } });
      expect(finished[0]!.error!.detail).toMatch(/more than 5000 ms/);
      const parked = await eventually(() => dlq.find((r) => r.event.id === event.id), 20_000);
      expect(parked.headers['vivier-dead-letter-reason']).toBe('handler_failed');
      const { rows } = await pool.query('select state, attempts from worker.jobs where assistant_message_id = $1', [data.assistantMessageId]);
      expect(rows).toEqual([{ state: 'finished', attempts: 3 }]);
      // Each call was aborted, not left running.
      expect(sim.stats().aborts.filter((a) => a.model === model)).toHaveLength(3);
    }, 90_000);

    it('takes over a job left by a crashed instance once its lease runs out, and calls the provider once', async () => {
      const model = `orphan-${randomUUID().slice(0, 8)}`;
      const data = completionRequest(`openai/${model}`);
      // What a crashed instance leaves: the job started, its lease running for another 1.5 s.
      await pool.query(
        `insert into worker.jobs (assistant_message_id, chat_id, user_id, state, attempts, lease_until) values ($1, $2, $3, 'started', 1, now() + interval '1500 milliseconds')`,
        [data.assistantMessageId, data.chatId, data.userId],
      );
      const leaseEnds = Date.now() + 1500;
      await kafka.produce(createEvent(EVENTS.jobsCompletionRequested, data));
      const finished = await eventually(async () => {
        const rows = await finishedOf(data.assistantMessageId);
        return rows.length > 0 && rows;
      });
      expect(Date.now()).toBeGreaterThanOrEqual(leaseEnds - 50);
      expect(finished[0]).toMatchObject({ status: 'completed' });
      expect(sim.stats().byModel[model]).toBe(1);
      const { rows } = await pool.query('select state, attempts from worker.jobs where assistant_message_id = $1', [data.assistantMessageId]);
      expect(rows).toEqual([{ state: 'finished', attempts: 2 }]);
    });

    /** What chat does to cancel a queued reply (ReplyStreams.publishCancel): a flag, and a message to whoever produces it. */
    async function cancelAsChat(assistantMessageId: string): Promise<void> {
      const redis = new Redis(worker.config.REDIS_URL, { keyPrefix: worker.config.REDIS_KEY_PREFIX });
      try {
        await redis.multi().set(`chat:reply:${assistantMessageId}:cancel`, '1', 'PX', 60_000).publish(`${worker.config.REDIS_KEY_PREFIX}chat:cancel`, assistantMessageId).exec();
      } finally {
        redis.disconnect();
      }
    }

    it('aborts the provider call within a second of a cancel, and reports what was generated as cancelled', async () => {
      const model = `cancel-${randomUUID().slice(0, 8)}`;
      // 400 tokens at 40 a second: ten seconds of reply, unless it is stopped.
      sim.setFaults({ tokensPerSecond: 40, replyTokens: 400 }, model);
      const data = completionRequest(`openai/${model}`);
      await kafka.produce(createEvent(EVENTS.jobsCompletionRequested, data));
      await eventually(() => (sim.stats().byModel[model] ?? 0) > 0, 30_000);
      await sleep(500);
      const cancelledAt = Date.now();
      await cancelAsChat(data.assistantMessageId);
      const abort = await eventually(() => sim.stats().aborts.find((a) => a.model === model), 5_000);
      expect(abort.abortedAt - cancelledAt).toBeLessThan(1000);
      const [finished] = await eventually(async () => {
        const rows = await finishedOf(data.assistantMessageId);
        return rows.length > 0 && rows;
      });
      expect(finished).toMatchObject({ status: 'cancelled', provider: 'openai', model: `openai/${model}` });
      expect(finished!.error).toBeUndefined();
      // Part of the reply, and its usage: the prompt, and the tokens streamed before the abort.
      expect(finished!.content.length).toBeGreaterThan(0);
      expect(finished!.usage.promptTokens).toBeGreaterThan(10);
      expect(finished!.usage.completionTokens).toBeGreaterThan(0);
      expect(finished!.usage.completionTokens).toBeLessThan(400);
      expect(sim.stats().byModel[model]).toBe(1);
      const { rows } = await pool.query('select state, attempts from worker.jobs where assistant_message_id = $1', [data.assistantMessageId]);
      expect(rows).toEqual([{ state: 'finished', attempts: 1 }]);
    });

    it('calls no provider for a reply cancelled before its job came up', async () => {
      const model = `cancelled-early-${randomUUID().slice(0, 8)}`;
      const data = completionRequest(`openai/${model}`);
      await cancelAsChat(data.assistantMessageId);
      await kafka.produce(createEvent(EVENTS.jobsCompletionRequested, data));
      const [finished] = await eventually(async () => {
        const rows = await finishedOf(data.assistantMessageId);
        return rows.length > 0 && rows;
      });
      expect(finished).toMatchObject({ status: 'cancelled', content: '', usage: { promptTokens: 0, completionTokens: 0 } });
      expect(sim.stats().byModel[model]).toBeUndefined();
    });

    it('fails at once, without retries, when no retry can help (unknown model)', async () => {
      const data = completionRequest(`openai/missing-${randomUUID().slice(0, 8)}`);
      await kafka.produce(createEvent(EVENTS.jobsCompletionRequested, data));
      const finished = await eventually(async () => {
        const rows = await finishedOf(data.assistantMessageId);
        return rows.length > 0 && rows;
      });
      expect(finished[0]).toMatchObject({ status: 'failed', error: { code: 'model_not_found' } });
      const { rows } = await pool.query('select attempts from worker.jobs where assistant_message_id = $1', [data.assistantMessageId]);
      expect(rows).toEqual([{ attempts: 1 }]);
    });
  });

  describe('titles (chat.events)', () => {
    async function startChat(options: { title?: string | null; model?: string; withMessage?: boolean } = {}) {
      const chatId = randomUUID();
      const userId = randomUUID();
      const model = options.model ?? 'sim/fast';
      await kafka.produce(createEvent(EVENTS.chatCreated, { chatId, userId, title: options.title ?? null, model, createdAt: new Date().toISOString() }));
      const userMessageId = randomUUID();
      const message = () =>
        createEvent(EVENTS.chatMessageCreated, {
          chatId,
          userId,
          messageId: userMessageId,
          content: 'Plan three days in Lisbon, please. I like tiles and seafood.',
          attachmentIds: [],
          model,
          createdAt: new Date().toISOString(),
        });
      if (options.withMessage !== false) await kafka.produce(message());
      const completed = (status: 'completed' | 'failed' = 'completed') =>
        createEvent(EVENTS.chatMessageCompleted, {
          chatId,
          userId,
          messageId: randomUUID(),
          userMessageId,
          status,
          provider: 'sim',
          model: 'sim/fast',
          usage: { promptTokens: 10, completionTokens: 20 },
          latencyMs: 100,
          cached: false,
          completedAt: new Date().toISOString(),
        });
      return { chatId, userId, completed, message };
    }

    it('generates a title after the first completed reply, exactly once even when the event comes twice', async () => {
      const chat = await startChat();
      await kafka.produce(chat.completed('failed')); // a failed reply does not title the chat
      const first = chat.completed();
      await kafka.produce(first);
      await kafka.produce(first);
      await kafka.produce(chat.completed()); // the second reply
      const titles = await eventually(async () => {
        const events = await outboxEvents(pool, TITLE, chat.chatId);
        return events.length > 0 && events;
      });
      await sleep(2000);
      expect(await outboxEvents(pool, TITLE, chat.chatId)).toHaveLength(1);
      expect(titles[0]!.data).toMatchObject({ chatId: chat.chatId, userId: chat.userId });
      const title = (titles[0]!.data as { title: string }).title;
      expect(title.length).toBeGreaterThan(0);
      expect(title.length).toBeLessThanOrEqual(81);
      expect(title).not.toContain('\n');
      // The user's words are not kept once the title is written from them.
      const { rows } = await pool.query('select title, first_message from worker.chat_titles where chat_id = $1', [chat.chatId]);
      expect(rows).toEqual([{ title, first_message: null }]);
    });

    it("keeps no chat's first message once the chat is deleted, nor for a chat the user titled", async () => {
      const deleted = await startChat({ withMessage: true });
      const gone = createEvent(EVENTS.chatDeleted, { chatId: deleted.chatId, userId: deleted.userId, deletedAt: new Date().toISOString() });
      await kafka.produce(gone);
      await handled(pool, gone.id);
      // A late copy of the message does not bring the words back.
      const late = deleted.message();
      await kafka.produce(late);
      await handled(pool, late.id);
      const titled = await startChat({ title: 'Mine' });
      const message = titled.message();
      await kafka.produce(message);
      await handled(pool, message.id);
      const { rows } = await pool.query('select chat_id, first_message from worker.chat_titles where chat_id = any($1::uuid[]) order by chat_id', [[deleted.chatId, titled.chatId]]);
      expect(rows.map((r) => r.first_message)).toEqual([null, null]);
    });

    it("writes the title with the chat's own model, from the chat's first message", async () => {
      const model = `titler-${randomUUID().slice(0, 8)}`;
      const chat = await startChat({ model: `openai/${model}` });
      await kafka.produce(chat.completed());
      await eventually(async () => (await outboxEvents(pool, TITLE, chat.chatId)).length === 1);
      const sent = sim.requests().filter((r) => r.model === model);
      expect(sent).toHaveLength(1);
      const body = sent[0]!.body as { messages: Array<{ role: string; content: string }> };
      expect(body.messages.map((m) => m.role)).toEqual(['system', 'user']);
      expect(body.messages[0]!.content).toMatch(/title/i);
      expect(body.messages[1]!.content).toBe('Plan three days in Lisbon, please. I like tiles and seafood.');
    });

    it('titles a chat whose first message arrives after its completed reply (a retried message.created), once', async () => {
      const model = `late-${randomUUID().slice(0, 8)}`;
      const chat = await startChat({ model: `openai/${model}`, withMessage: false });
      const reply = chat.completed();
      await kafka.produce(reply);
      await handled(pool, reply.id);
      expect(await outboxEvents(pool, TITLE, chat.chatId)).toHaveLength(0);
      await kafka.produce(chat.message());
      await eventually(async () => (await outboxEvents(pool, TITLE, chat.chatId)).length === 1);
      const sent = sim.requests().filter((r) => r.model === model);
      expect(sent).toHaveLength(1);
      expect((sent[0]!.body as { messages: Array<{ content: string }> }).messages[1]!.content).toBe('Plan three days in Lisbon, please. I like tiles and seafood.');
      // The next reply finds the title written.
      const next = chat.completed();
      await kafka.produce(next);
      await handled(pool, next.id);
      expect(await outboxEvents(pool, TITLE, chat.chatId)).toHaveLength(1);
    });

    /**
     * A chat whose reply is handled before its first message, with a title model that misbehaves
     * (`faults`): the message is sent, and the chat's first title event awaited (at most `waitMs`).
     */
    async function titledLate(name: string, faults: Parameters<ProviderSim['setFaults']>[0], waitMs?: number) {
      const model = `${name}-${randomUUID().slice(0, 8)}`;
      sim.setFaults(faults, model);
      const chat = await startChat({ model: `openai/${model}`, withMessage: false });
      const reply = chat.completed();
      await kafka.produce(reply);
      await handled(pool, reply.id);
      const message = chat.message();
      const sentAt = Date.now();
      await kafka.produce(message);
      const titles = await eventually(async () => {
        const events = await outboxEvents(pool, TITLE, chat.chatId);
        return events.length > 0 && events;
      }, waitMs);
      return { model, message, titledAfterMs: Date.now() - sentAt, title: (titles[0]!.data as { title: string }).title };
    }

    it('titles such a chat from the start of its message at once when the title model fails', async () => {
      const { model, message, title } = await titledLate('late-failing', { status5xx: 503 });
      expect(title).toBe('Plan three days in Lisbon, please. I like tiles and seafood');
      // Asked once (the router's own retry included): the message was not sent back to wait for the model again.
      await handled(pool, message.id);
      expect(sim.requests().filter((r) => r.model === model).length).toBeLessThanOrEqual(2);
    });

    it('titles a chat from the start of its message within TITLE_TIMEOUT_MS when the title model does not answer', async () => {
      // Nothing for a minute: the transport's own idle budget (60 s) would hold the partition that long.
      const { model, title, titledAfterMs } = await titledLate('late-hung', { latencyMs: 60_000 }, 20_000);
      expect(title).toBe('Plan three days in Lisbon, please. I like tiles and seafood');
      expect(titledAfterMs).toBeLessThan(10_000);
      expect(sim.requests().filter((r) => r.model === model).length).toBeGreaterThanOrEqual(1);
    });

    it('leaves chats the user titled alone', async () => {
      const chat = await startChat({ title: 'My own title' });
      const reply = chat.completed();
      await kafka.produce(reply);
      await handled(pool, reply.id);
      expect(await outboxEvents(pool, TITLE, chat.chatId)).toHaveLength(0);
    });
  });
  describe('summaries (chat.context.truncated)', () => {
    const SUMMARY = 'vivier.worker.summary.generated.v1';

    function overflow(chatId: string, userId: string, model: string) {
      return createEvent(EVENTS.chatContextTruncated, { chatId, userId, messageId: randomUUID(), model, omittedMessages: 4, historyBudget: 3000, truncatedAt: new Date().toISOString() });
    }
    function turn(n: number, at: number) {
      return [
        { id: randomUUID(), role: 'user' as const, content: `Question ${n}: what about the tiles of Lisbon?`, createdAt: new Date(at).toISOString() },
        { id: randomUUID(), role: 'assistant' as const, content: `Answer ${n}: blue and white azulejos.`, createdAt: new Date(at + 1).toISOString() },
      ];
    }
    /** vivier_worker_summaries_total{outcome} on the worker's /metrics (0 before it is first counted). */
    async function outcomes(outcome: string): Promise<number> {
      const text = (await worker.app.inject({ method: 'GET', url: '/metrics' })).body;
      const line = text.split('\n').find((l) => l.startsWith('vivier_worker_summaries_total{') && l.includes(`outcome="${outcome}"`));
      return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
    }
    const spoken = (messages: Array<{ role: string; content: string }>) => messages.map((m) => `${m.role === 'user' ? 'User' : 'Assistant'}: ${m.content}`).join('\n\n');
    const json = (res: ServerResponse, body: unknown) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));

    it("folds the messages chat names into the chat's summary so far, publishes it through the last one, and builds the next on it", async () => {
      const chatId = randomUUID();
      const userId = randomUUID();
      const model = `summariser-${randomUUID().slice(0, 8)}`;
      const earlier = { text: 'Earlier: the user plans a trip to Lisbon.', throughMessageId: randomUUID(), throughCreatedAt: new Date(Date.now() - 60_000).toISOString() };
      const messages = [...turn(1, Date.now() - 50_000), ...turn(2, Date.now() - 40_000)];
      const queries: URLSearchParams[] = [];
      // Chat has its older summary; after the worker's own, there is nothing new to fold.
      summaryScript.set(chatId, (query, res) => {
        queries.push(query);
        json(res, query.get('afterId') ? { summary: earlier, messages: [] } : { summary: earlier, messages });
      });
      const [written, idle] = [await outcomes('written'), await outcomes('nothing_to_fold')];

      await kafka.produce(overflow(chatId, userId, `openai/${model}`));
      const [published] = await eventually(async () => {
        const events = await outboxEvents(pool, SUMMARY, chatId);
        return events.length > 0 && events;
      });
      const through = messages.at(-1)!;
      expect(published!.data).toMatchObject({ chatId, userId, throughMessageId: through.id, throughCreatedAt: through.createdAt, model: `openai/${model}` });
      const summary = (published!.data as { summary: string }).summary;
      expect(summary.length).toBeGreaterThan(0);
      expect(queries[0]!.get('userId')).toBe(userId);
      expect(queries[0]!.get('historyBudget')).toBe('3000');
      // A model the catalogue does not know has the default window: less twice the summary and the instructions.
      expect(queries[0]!.get('budget')).toBe(String(DEFAULT_CONTEXT_WINDOW - 2 * 600 - 256));
      expect(queries[0]!.has('afterId')).toBe(false);
      // The model was given the summary so far and every message, each with who wrote it.
      const sent = sim.requests().filter((r) => r.model === model);
      expect(sent).toHaveLength(1);
      const body = sent[0]!.body as { messages: Array<{ role: string; content: string }>; max_completion_tokens?: number; max_tokens?: number };
      expect(body.messages.map((m) => m.role)).toEqual(['system', 'user']);
      expect(body.messages[0]!.content).toMatch(/summary/i);
      expect(body.messages[1]!.content).toBe(
        `Summary so far:\n${earlier.text}\n\nMessages that follow it:\n\n${spoken(messages)}`,
      );
      expect(body.max_completion_tokens ?? body.max_tokens).toBe(600);
      const { rows } = await pool.query('select summary, through_id from worker.chat_summaries where chat_id = $1', [chatId]);
      expect(rows).toEqual([{ summary, through_id: through.id }]);

      // Its second round found nothing after it. The next overflow, before chat has stored the
      // summary, asks chat for what follows the worker's own summary too.
      const again = overflow(chatId, userId, `openai/${model}`);
      await kafka.produce(again);
      await handled(pool, again.id);
      expect(queries).toHaveLength(3);
      for (const query of queries.slice(1)) {
        expect(query.get('afterId')).toBe(through.id);
        expect(query.get('afterAt')).toBe(through.createdAt);
      }
      expect(sim.requests().filter((r) => r.model === model)).toHaveLength(1);
      expect(await outboxEvents(pool, SUMMARY, chatId)).toHaveLength(1);
      expect([await outcomes('written'), await outcomes('nothing_to_fold')]).toEqual([written + 1, idle + 1]);

      // The summary holds the user's words: it goes with the chat.
      const gone = createEvent(EVENTS.chatDeleted, { chatId, userId, deletedAt: new Date().toISOString() });
      await kafka.produce(gone);
      await handled(pool, gone.id);
      expect((await pool.query('select summary, through_id from worker.chat_summaries where chat_id = $1', [chatId])).rows).toEqual([{ summary: null, through_id: null }]);
    });

    it('catches a chat far behind up in rounds, each on the summary of the one before, and publishes the last', async () => {
      const chatId = randomUUID();
      const userId = randomUUID();
      const model = `resumer-${randomUUID().slice(0, 8)}`;
      const first = turn(1, Date.now() - 50_000);
      const second = turn(2, Date.now() - 40_000);
      // Chat holds no summary; what to fold comes a turn at a time, as for a summariser of a small window.
      summaryScript.set(chatId, (query, res) => {
        const afterId = query.get('afterId');
        json(res, { summary: null, messages: !afterId ? first : afterId === first[1]!.id ? second : [] });
      });
      await kafka.produce(overflow(chatId, userId, `openai/${model}`));
      await eventually(async () => (await outboxEvents(pool, SUMMARY, chatId)).length === 1);
      const sent = sim.requests().filter((r) => r.model === model);
      expect(sent).toHaveLength(2);
      const inputOf = (n: number) => (sent[n]!.body as { messages: Array<{ content: string }> }).messages[1]!.content;
      expect(inputOf(0)).toBe(`Summary so far:\n(none: the messages below open the conversation)\n\nMessages that follow it:\n\n${spoken(first)}`);
      const [published] = await outboxEvents(pool, SUMMARY, chatId);
      expect(published!.data).toMatchObject({ throughMessageId: second[1]!.id });
      // The second round was written on the first one's summary (which was not published on its own).
      expect(inputOf(1)).toMatch(/^Summary so far:\n(?!\(none)/);
      expect(inputOf(1).endsWith(`\n\nMessages that follow it:\n\n${spoken(second)}`)).toBe(true);
    });

    it("asks for a summary of at most an eighth of a small reply model's window, and what fits beside it", async () => {
      const chatId = randomUUID();
      const queries: URLSearchParams[] = [];
      summaryScript.set(chatId, (query, res) => {
        queries.push(query);
        json(res, { summary: null, messages: turn(1, Date.now() - 10_000) });
      });
      const before = sim.requests().filter((r) => r.model === 'small-window').length;
      await kafka.produce(overflow(chatId, randomUUID(), 'openai/small-window'));
      await eventually(async () => (await outboxEvents(pool, SUMMARY, chatId)).length === 1);
      const body = sim.requests().filter((r) => r.model === 'small-window')[before]!.body as { max_completion_tokens?: number; max_tokens?: number; messages: Array<{ content: string }> };
      expect(body.max_completion_tokens ?? body.max_tokens).toBe(250);
      expect(body.messages[0]!.content).toContain('at most about 150 words');
      expect(queries[0]!.get('budget')).toBe(String(2000 - 2 * 250 - 256));
    });

    it('writes no summary for a chat deleted before a late overflow of it is handled', async () => {
      const chatId = randomUUID();
      const userId = randomUUID();
      const model = `late-${randomUUID().slice(0, 8)}`;
      summaryScript.set(chatId, (_query, res) => json(res, { summary: null, messages: turn(1, Date.now() - 10_000) }));
      const gone = createEvent(EVENTS.chatDeleted, { chatId, userId, deletedAt: new Date().toISOString() });
      await kafka.produce(gone);
      await handled(pool, gone.id);
      // The overflow that came before the delete, back from a retry topic after it.
      const late = overflow(chatId, userId, `openai/${model}`);
      await kafka.produce(late);
      await handled(pool, late.id);
      expect(sim.requests().filter((r) => r.model === model)).toHaveLength(0);
      expect(await outboxEvents(pool, SUMMARY, chatId)).toHaveLength(0);
      const { rows } = await pool.query('select summary, through_id, deleted_at is not null as deleted from worker.chat_summaries where chat_id = $1', [chatId]);
      expect(rows).toEqual([{ summary: null, through_id: null, deleted: true }]);
    });

    it('writes nothing for a chat that is gone, nor when the model keeps failing', async () => {
      const [gone0, failed0] = [await outcomes('chat_gone'), await outcomes('model_failed')];
      const userId = randomUUID();
      const gone = overflow(randomUUID(), userId, 'sim/fast');
      await kafka.produce(gone);
      await handled(pool, gone.id);
      expect(await outboxEvents(pool, SUMMARY, gone.data.chatId)).toHaveLength(0);

      const chatId = randomUUID();
      const model = `unwell-${randomUUID().slice(0, 8)}`;
      sim.setFaults({ status5xx: 503 }, model);
      summaryScript.set(chatId, (_query, res) => json(res, { summary: null, messages: turn(1, Date.now() - 10_000) }));
      const failing = overflow(chatId, userId, `openai/${model}`);
      await kafka.produce(failing);
      // Retried (CONSUMER_RETRY_ATTEMPTS 3), then given up: no summary, and the event is recorded
      // as handled (a parked one is not: its marker is another id); the next overflow asks again.
      await eventually(() => logs.lines.some((l) => l.chatId === chatId && String(l.msg).includes('summary model failed')), 30_000);
      await handled(pool, failing.id);
      expect(await outboxEvents(pool, SUMMARY, chatId)).toHaveLength(0);
      expect((await pool.query('select 1 from worker.chat_summaries where chat_id = $1', [chatId])).rows).toHaveLength(0);
      expect([await outcomes('chat_gone'), await outcomes('model_failed')]).toEqual([gone0 + 1, failed0 + 1]);
    });
  });

  describe('exports (jobs.export)', () => {
    const lines = (userId: string) => [
      { type: 'chat', id: randomUUID(), userId, title: 'Lisbon', model: 'sim/fast', createdAt: '2026-01-01T00:00:00.000Z' },
      { type: 'message', id: randomUUID(), role: 'user', content: 'Plan three days in Lisbon — «ça va» 🚋' },
      { type: 'message', id: randomUUID(), role: 'assistant', content: 'Day 1: Alfama.' },
      { type: 'file', id: randomUUID(), name: 'notes.txt', mediaType: 'text/plain', sizeBytes: 12 },
    ];

    it('writes the bundle to S3 once and publishes export.ready once, even when the job comes twice', async () => {
      const userId = randomUUID();
      const exportId = randomUUID();
      const content = lines(userId);
      exportScript.set(userId, (res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        // Lines split across writes, as a real stream arrives.
        const text = content.map((l) => JSON.stringify(l)).join('\n') + '\n';
        res.write(text.slice(0, 17));
        setTimeout(() => res.end(text.slice(17)), 20);
      });
      const event = createEvent(EVENTS.jobsExportRequested, { exportId, userId });
      await kafka.produce(event);
      await kafka.produce(event);
      const [ready] = await eventually(async () => {
        const events = await outboxEvents(pool, EXPORT_READY, exportId);
        return events.length > 0 && events;
      });
      const copy = createEvent(EVENTS.jobsExportRequested, { exportId, userId });
      await kafka.produce(copy);
      await handled(pool, copy.id);
      await sleep(1000);
      expect(await outboxEvents(pool, EXPORT_READY, exportId)).toHaveLength(1);
      expect(exportCalls.get(userId)).toBe(1);

      const data = ready!.data as { objectKey: string; sizeBytes: number; expiresAt: string; userId: string };
      expect(data.objectKey).toBe(`exports/${userId}/${exportId}.ndjson`);
      expect(data.userId).toBe(userId);
      const hours = (Date.parse(data.expiresAt) - Date.now()) / 3_600_000;
      expect(hours).toBeGreaterThan(23.9);
      expect(hours).toBeLessThanOrEqual(24);

      const s3 = worker.app.s3;
      const object = await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: data.objectKey }));
      expect(object.ContentType).toBe('application/x-ndjson');
      const bytes = await object.Body!.transformToByteArray();
      expect(bytes.length).toBe(data.sizeBytes);
      const bundle = Buffer.from(bytes).toString('utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(bundle[0]).toMatchObject({ type: 'export', exportId, userId });
      expect(bundle.slice(1, -1)).toEqual(content);
      expect(bundle.at(-1)).toEqual({ type: 'summary', chats: 1, messages: 2, files: 1 });
    });

    it('streams an export larger than a part to S3 whole (files come inline: 20 MB here)', async () => {
      const userId = randomUUID();
      const exportId = randomUUID();
      const files = Array.from({ length: 5 }, (_, i) => ({ type: 'file', id: randomUUID(), name: `scan-${i}.pdf`, contentBase64: `${i}`.repeat(4 * 1024 * 1024) }));
      exportScript.set(userId, (res) => {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        for (const f of files) res.write(`${JSON.stringify(f)}\n`);
        res.end();
      });
      await kafka.produce(createEvent(EVENTS.jobsExportRequested, { exportId, userId }));
      const [ready] = await eventually(async () => {
        const events = await outboxEvents(pool, EXPORT_READY, exportId);
        return events.length > 0 && events;
      });
      const data = ready!.data as { objectKey: string; sizeBytes: number };
      const s3 = worker.app.s3;
      const object = await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: data.objectKey }));
      const text = await object.Body!.transformToString();
      expect(Buffer.byteLength(text)).toBe(data.sizeBytes);
      expect(data.sizeBytes).toBeGreaterThan(20 * 1024 * 1024);
      const bundle = text.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(bundle.slice(1, -1)).toEqual(files);
      expect(bundle.at(-1)).toEqual({ type: 'summary', chats: 0, messages: 0, files: 5 });
      // 20 MB through JSON, multipart S3 and back: 5 s alone, 12 s in a full run, once past 30 s (the default) beside other files.
    }, 120_000);

    it('a stop during the last attempt leaves the export to the next member; running out of time fails it', async () => {
      const handle = exportHandlers({
        db: createDatabase(worker.app.pg, workerTables),
        s3: worker.app.s3,
        publish: (tx, events) => worker.app.messaging.publish(tx, events),
        logger: worker.app.log,
        chatUrl: worker.config.CHAT_URL,
        internalSecret: SECRET,
        retentionHours: 24,
        maxAttempts: 3,
      })['vivier.jobs.export.requested.v1']!;
      const attemptCut = async (reason: Error) => {
        const userId = randomUUID();
        const exportId = randomUUID();
        const controller = new AbortController();
        exportScript.set(userId, (res) => {
          res.writeHead(200, { 'content-type': 'application/x-ndjson' });
          res.write('{"type":"chat","id":"c1"}\n');
          setTimeout(() => controller.abort(reason), 100); // and nothing more: the call hangs until the signal
        });
        const context = { tx: undefined as never, topic: 'jobs.export' as const, partition: 0, attempt: 3, afterCommit: () => undefined, signal: controller.signal };
        await expect(handle(createEvent(EVENTS.jobsExportRequested, { exportId, userId }), context)).rejects.toThrow();
        const { rows } = await pool.query('select state from worker.exports where export_id = $1', [exportId]);
        return { state: rows[0].state as string, failed: await outboxEvents(pool, EXPORT_FAILED, exportId) };
      };
      // A deploy: the consumer stops the handler. The export is not the export's fault.
      expect(await attemptCut(new Error('the consumer is stopping'))).toEqual({ state: 'started', failed: [] });
      // The deadline on the last attempt: failed for good, and the user is told.
      const timedOut = await attemptCut(new HandlerTimedOut(5000, 'aborted'));
      expect(timedOut.state).toBe('failed');
      expect(timedOut.failed).toHaveLength(1);
    });

    it('publishes export.failed at once when chat refuses (unknown user)', async () => {
      const userId = randomUUID(); // not scripted: 404
      const exportId = randomUUID();
      await kafka.produce(createEvent(EVENTS.jobsExportRequested, { exportId, userId }));
      const [failed] = await eventually(async () => {
        const events = await outboxEvents(pool, EXPORT_FAILED, exportId);
        return events.length > 0 && events;
      });
      expect(failed!.data).toEqual({ exportId, userId, reason: 'The export could not be written; please try again.' });
      expect(exportCalls.get(userId)).toBe(1);
      expect(await outboxEvents(pool, EXPORT_READY, exportId)).toHaveLength(0);
    });

    it('retries while chat fails, then publishes export.failed and parks the job on the dead-letter topic', async () => {
      const userId = randomUUID();
      const exportId = randomUUID();
      exportScript.set(userId, (res) => {
        // Cut mid-stream with a broken line after a 200: a broken upstream, worth a retry.
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.end('{"type":"chat","id":"x"}\n{"type":"mess');
      });
      const dlq = await kafka.collect('jobs.export.dlq.worker');
      const event = createEvent(EVENTS.jobsExportRequested, { exportId, userId });
      await kafka.produce(event);
      await eventually(() => dlq.find((r) => r.event.id === event.id), 60_000);
      const failed = await outboxEvents(pool, EXPORT_FAILED, exportId);
      expect(failed).toHaveLength(1);
      expect(exportCalls.get(userId)).toBe(3);
      const { rows } = await pool.query('select state, reason from worker.exports where export_id = $1', [exportId]);
      expect(rows[0].state).toBe('failed');
      expect(rows[0].reason).toMatch(/not JSON/);
    });
  });

  describe('providers set through the admin API (admin.events)', () => {
    it('answers a queued reply with a provider configured at run time, with its key; turned off, the job fails as unknown', async () => {
      const providerId = `w${randomUUID().slice(0, 8)}`;
      const configured = (revision: number, enabled: boolean) =>
        createEvent(EVENTS.adminProviderConfigured, {
          actor: { userId: randomUUID() },
          providerId,
          kind: 'openai_compatible',
          enabled,
          baseUrl: `${sim.url}/v1`,
          models: ['tuned'],
          routing: { weight: 1, timeoutMs: 30_000, maxRetries: 0, fallbacks: [] },
          apiKeyEnvelope: sealEventSecret(DEV_PROVIDER_KEY_ENCRYPTION_KEY, providerId, 'sk-worker-admin-key'),
          revision,
        });
      const stored = (revision: number) =>
        eventually(async () => (await pool.query('select 1 from worker.provider_settings where provider_id = $1 and revision = $2', [providerId, revision])).rows.length === 1, 45_000);
      try {
        await kafka.produce(configured(1, true));
        await stored(1);
        const data = completionRequest(`${providerId}/tuned`, { maxOutputTokens: 20 });
        await kafka.produce(createEvent(EVENTS.jobsCompletionRequested, data));
        const [finished] = await eventually(async () => {
          const rows = await finishedOf(data.assistantMessageId);
          return rows.length > 0 && rows;
        }, 45_000);
        expect(finished).toMatchObject({ status: 'completed', provider: providerId, model: `${providerId}/tuned` });
        expect(sim.requests().filter((r) => r.model === 'tuned').map((r) => r.headers.authorization)).toEqual(['Bearer sk-worker-admin-key']);

        await kafka.produce(configured(2, false));
        await stored(2);
        // Applied right after the commit that stored it (a read of the table); then a job names a provider that is off.
        await sleep(1000);
        const off = completionRequest(`${providerId}/tuned`);
        await kafka.produce(createEvent(EVENTS.jobsCompletionRequested, off));
        const [refused] = await eventually(async () => {
          const rows = await finishedOf(off.assistantMessageId);
          return rows.length > 0 && rows;
        }, 45_000);
        expect(refused).toMatchObject({ status: 'failed', error: { code: 'model_not_found' } });
        expect(sim.requests().filter((r) => r.model === 'tuned')).toHaveLength(1);
        // A provider unknown here may be one whose settings have not arrived yet: a few attempts first.
        const { rows } = await pool.query('select attempts from worker.jobs where assistant_message_id = $1', [off.assistantMessageId]);
        expect(rows).toEqual([{ attempts: UNKNOWN_PROVIDER_ATTEMPTS }]);
        // The key was opened and used, and is in no log line (QUALITY-BAR 17).
        expect(logs.lines.length).toBeGreaterThan(20);
        expect(logs.text()).not.toContain('sk-worker-admin-key');
      } finally {
        // Chat's consumers of other test files stored it too (the worker role cannot reach theirs).
        const admin = new pg.Client({ connectionString: testAdminDatabaseUrl() });
        await admin.connect();
        await admin.query('delete from worker.provider_settings where provider_id = $1', [providerId]);
        await admin.query('delete from chat.provider_settings where provider_id = $1', [providerId]);
        await admin.end();
      }
    });
  });
});
