import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import type pg from 'pg';
import { startProviderSim, type ProviderSim } from '@vivier/provider-sim';
import { createEvent, EVENTS, toKafkaRecord, type AnyEvent } from '@vivier/contracts';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { apiChatId } from '../src/modules/openai/openai.service';
import { poolRunner, turnsRepository } from '../src/modules/messages/turns.repository';
import { QuotaHolders } from '../src/modules/quotas/quota-holders';
import { ResponseCache } from '../src/modules/cache/response-cache.service';
import { testEnv } from '@vivier/service-kit/testing';
import { chatPool, createChat, eventually, parseSse, startChat, streamSse, testUser, writeProvidersFile, type TestChat } from './helpers';

// Quotas from admin.events, the response cache, and replies queued for the worker
// (jobs.completion out, worker.events completion.finished in), with the consumers running.
describe('quotas, cache and async replies', () => {
  let sim: ProviderSim;
  let chat: TestChat;
  let pool: pg.Pool;
  let producer: Producer;
  let providersFile: string;
  const admin = { userId: randomUUID() };

  beforeAll(async () => {
    sim = await startProviderSim({ port: 0 });
    // A second before the first token, then 40 tokens/s: a paced reply holds its reservation long enough to be seen.
    sim.setFaults({ tokensPerSecond: 40, latencyMs: 1000 }, 'paced');
    providersFile = writeProvidersFile({
      providers: { openai: { baseUrl: `${sim.url}/v1`, apiKey: 'sk-test' }, sim: { tokensPerSecond: 0, firstTokenLatencyMs: 0 } },
    });
    chat = await startChat({ PROVIDERS_FILE: providersFile, CHAT_DEFAULT_MODEL: 'openai/gpt-4o-mini', CONSUMER_SESSION_TIMEOUT_MS: '6000' }, { consumers: true });
    await chat.listen();
    pool = chatPool();
    const kafka = new Kafka({ clientId: 'chat-test', brokers: chat.config.KAFKA_BROKERS.split(','), logLevel: logLevel.NOTHING });
    producer = kafka.producer({ allowAutoTopicCreation: false });
    await producer.connect();
  });
  afterAll(async () => {
    await producer?.disconnect();
    await chat?.close();
    await sim?.close();
    await pool?.end();
  });

  /**
   * Runs `fn` while a transaction of the test holds an id open. Other test files run chat apps on
   * the same schema and worker apps on the same broker, and a worker answers any job it sees; but
   * every relay publishes only rows of transactions older than the oldest one still open, so a job
   * queued meanwhile stays in the outbox while this test plays the worker.
   */
  async function withOutboxHeld<T>(fn: () => Promise<T>): Promise<T> {
    const client = await pool.connect();
    try {
      await client.query('begin');
      await client.query('select pg_current_xact_id()');
      return await fn();
    } finally {
      await client.query('rollback').catch(() => undefined);
      client.release();
    }
  }

  async function produce(event: AnyEvent): Promise<void> {
    const record = toKafkaRecord(event);
    await producer.send({ topic: record.topic, acks: -1, messages: [{ key: record.key, value: record.value, headers: record.headers }] });
  }

  async function setQuota(userId: string, monthlyTokens: number | null) {
    await produce(createEvent(EVENTS.adminQuotaSet, { actor: admin, userId, monthlyTokens }));
    await eventually(async () => {
      const { rows } = await pool.query('select monthly_tokens from chat.quotas where user_id = $1', [userId]);
      return rows.length === 1 && (rows[0].monthly_tokens === null ? null : Number(rows[0].monthly_tokens)) === monthlyTokens;
    }, 45_000);
  }

  /** What a worker reports for a queued reply: done, with this text and usage. */
  const workerFinished = (
    turn: { assistantMessage: { id: string }; userMessage: { id: string } },
    chatId: string,
    userId: string,
    content: string,
    usage: { promptTokens: number; completionTokens: number },
  ) =>
    createEvent(EVENTS.workerCompletionFinished, {
      assistantMessageId: turn.assistantMessage.id,
      chatId,
      userId,
      userMessageId: turn.userMessage.id,
      status: 'completed',
      content,
      provider: 'openai',
      model: 'openai/gpt-4o-mini',
      usage,
      latencyMs: 1,
    });
  /** Waits until chat's consumer has handled the event. */
  const handled = (eventId: string) =>
    eventually(async () => (await pool.query('select 1 from chat.processed_events where event_id = $1', [eventId])).rows.length === 1, 45_000);

  const usage = async (userId: string) => {
    const { rows } = await pool.query('select reserved::int, used::int from chat.quota_usage where user_id = $1', [userId]);
    return rows[0] as { reserved: number; used: number } | undefined;
  };

  /** A small non-streamed `POST /v1/chat/completions` (at most 8 tokens of answer) to `instance` as `user`. */
  const askCompletion = (instance: TestChat, user: ReturnType<typeof testUser>, content: string) =>
    instance.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      headers: user.headers,
      payload: { model: 'openai/gpt-4o-mini', max_tokens: 8, messages: [{ role: 'user', content }] },
    });
  /** The tokens an answer of /v1/chat/completions reports. */
  const totalTokens = (answer: { json(): unknown }) => (answer.json() as { usage: { total_tokens: number } }).usage.total_tokens;

  it('reserves prompt + maximum output against the monthly quota, settles with real usage, refuses past it', async () => {
    const user = testUser();
    await setQuota(user.id, 2000);
    const chatId = await createChat(chat.app, user);
    const send = (content: string, maxTokens: number, model = 'openai/paced') =>
      chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content, maxTokens, model } });

    // In flight, the reply holds prompt + its maximum output.
    const pending = send('echo: one two three four five six', 1000);
    const reserved = await eventually(async () => ((await usage(user.id))?.reserved ?? 0) > 1000 && (await usage(user.id))!.reserved);
    expect(reserved).toBeGreaterThan(1000);
    expect(reserved).toBeLessThan(1100);
    expect((await pending).statusCode).toBe(201);
    const turn = (await pending).json();
    const after = (await usage(user.id))!;
    expect(after.reserved).toBe(0);
    expect(after.used).toBe(turn.assistantMessage.usage.promptTokens + turn.assistantMessage.usage.completionTokens);

    // 2000 - used is left: a request that may need more is refused before anything is stored.
    const refused = await send('echo: too much', 1990);
    expect(refused.statusCode).toBe(429);
    expect(refused.json()).toMatchObject({ code: 'quota_exceeded', status: 429 });
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    const { rows } = await pool.query('select count(*)::int as n from chat.messages where chat_id = $1', [chatId]);
    expect(rows[0].n).toBe(2);
    expect((await usage(user.id))!.reserved).toBe(0);

    // Unlimited again.
    await setQuota(user.id, null);
    expect((await send('echo: fine now', 1990, 'sim/fast')).statusCode).toBe(201);
  }, 90_000);

  it('releases the reservation of a reply whose chat is deleted while it runs, stops its provider call, and counts what it generated', async () => {
    const user = testUser();
    await setQuota(user.id, 100_000);
    const chatId = await createChat(chat.app, user);
    const words = Array.from({ length: 200 }, (_, i) => `w${i}`).join(' ');
    const pending = chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content: `echo: ${words}`, maxTokens: 1000, model: 'openai/paced' } });
    await eventually(async () => ((await usage(user.id))?.reserved ?? 0) > 1000);
    // A second to the first token, then 40 a second: some text, far from all of it.
    await new Promise((r) => setTimeout(r, 1600));
    const deletedAt = Date.now();
    const deleted = await chat.app.inject({ method: 'DELETE', url: `/api/v1/chats/${chatId}`, headers: user.headers });
    expect(deleted.statusCode).toBe(204);
    // Released with the delete: nothing holds the user's quota for a reply nobody can see.
    expect((await usage(user.id))!.reserved).toBe(0);
    const aborted = await eventually(() => sim.stats().aborts.find((a) => a.model === 'paced' && a.abortedAt >= deletedAt), 3000);
    expect(aborted.abortedAt - deletedAt).toBeLessThan(1000);
    await pending;
    // What was generated is counted, once, with its usage event.
    const used = await eventually(async () => (await usage(user.id))!.used > 0 && (await usage(user.id))!.used);
    const { rows } = await pool.query(
      `select envelope->'data' as data from chat.outbox where envelope->>'type' = 'vivier.chat.message.completed.v1' and envelope->'data'->>'chatId' = $1`,
      [chatId],
    );
    expect(rows).toHaveLength(1);
    const event = rows[0].data as { status: string; usage: { promptTokens: number; completionTokens: number } };
    expect(event.status).toBe('cancelled');
    expect(event.usage.completionTokens).toBeGreaterThan(0);
    expect(event.usage.completionTokens).toBeLessThan(200);
    expect(used).toBe(event.usage.promptTokens + event.usage.completionTokens);
    expect((await usage(user.id))!.reserved).toBe(0);
  }, 90_000);

  it('reserves atomically: concurrent sends cannot overdraw the quota', async () => {
    const user = testUser();
    await setQuota(user.id, 400);
    const chatIds = await Promise.all(Array.from({ length: 6 }, () => createChat(chat.app, user)));
    // Each reserves ~100 prompt... + 100 output: at most 3 (and at least 1) fit at once.
    const results = await Promise.all(
      chatIds.map((id) =>
        chat.app.inject({ method: 'POST', url: `/api/v1/chats/${id}/messages`, headers: user.headers, payload: { content: 'echo: same words in every chat', maxTokens: 110, model: 'openai/paced' } }),
      ),
    );
    const statuses = results.map((r) => r.statusCode).sort();
    expect(statuses.filter((s) => s === 201).length).toBe(3);
    expect(statuses.filter((s) => s === 429).length).toBe(3);
    const final = (await usage(user.id))!;
    expect(final.reserved).toBe(0);
    expect(final.used).toBeLessThanOrEqual(400);
  }, 90_000);

  it('OpenAI API: concurrent requests of one key are reserved and settled together, exactly, never past the quota', async () => {
    const complete = (user: ReturnType<typeof testUser>, n: number) =>
      Promise.all(
        Array.from({ length: n }, () =>
          chat.app.inject({
            method: 'POST',
            url: '/v1/chat/completions',
            headers: user.headers,
            payload: { model: 'openai/paced', max_tokens: 110, messages: [{ role: 'user', content: 'echo: same words in every request' }] },
          }),
        ),
      );
    // No quota: every request answered; nothing left reserved, the sum of their usage used, and
    // one usage event each (the settlements of a batch are one statement).
    // Settlements are written after the answers (see the next test): wait for them.
    const free = testUser();
    const answers = await complete(free, 30);
    expect(answers.map((r) => r.statusCode)).toEqual(Array(30).fill(200));
    const total = answers.reduce((n, r) => n + totalTokens(r), 0);
    await expect.poll(() => usage(free.id), { timeout: 10_000 }).toEqual({ reserved: 0, used: total });
    const { rows } = await pool.query(`select count(*)::int as n from chat.outbox where key = $1 and topic = 'chat.events'`, [apiChatId(free.id)]);
    expect(rows[0].n).toBe(30);

    // ~120 tokens reserved each, 400 allowed: three fit. The requests that arrive while the first
    // reservation is in flight go as one reservation, which does not fit; one by one, two more do.
    const limited = testUser();
    await setQuota(limited.id, 400);
    const statuses = (await complete(limited, 6)).map((r) => r.statusCode).sort();
    expect(statuses).toEqual([200, 200, 200, 429, 429, 429]);
    await expect.poll(async () => (await usage(limited.id))!.reserved, { timeout: 10_000 }).toBe(0);
    expect((await usage(limited.id))!.used).toBeLessThanOrEqual(400);
  }, 90_000);

  it('OpenAI API: answers before its settlement is written, and closing the service waits for every settlement', async () => {
    const instance = await startChat({ PROVIDERS_FILE: providersFile, CHAT_DEFAULT_MODEL: 'openai/gpt-4o-mini' });
    const [first, second] = [testUser(), testUser()];
    const ask = (user: ReturnType<typeof testUser>, maxTokens: number) =>
      instance.app.inject({
        method: 'POST',
        url: '/v1/chat/completions',
        headers: user.headers,
        payload: { model: 'openai/paced', max_tokens: maxTokens, messages: [{ role: 'user', content: 'Tell me about rivers.' }] },
      });
    const notWaiting = async (answer: ReturnType<typeof ask>) => {
      const timeout = new Promise<'waited for a settlement'>((resolve) => setTimeout(() => resolve('waited for a settlement'), 10_000));
      const response = await Promise.race([answer, timeout]);
      expect(response).not.toBe('waited for a settlement');
      return ((response as Awaited<ReturnType<typeof ask>>).json() as { usage: { total_tokens: number } }).usage.total_tokens;
    };
    const locker = await pool.connect();
    let closed = false;
    try {
      // Both reserve at once and get their first token a second later; the first ends sooner.
      const answers = [ask(first, 4), ask(second, 24)];
      await eventually(async () => ((await usage(first.id))?.reserved ?? 0) > 0 && ((await usage(second.id))?.reserved ?? 0) > 0);
      // Writes to quota_usage now wait for this transaction. A table lock takes no transaction id,
      // so the relays of tests running meanwhile (which publish below the oldest one) go on.
      await locker.query('begin');
      await locker.query('lock table chat.quota_usage in share mode');
      expect((await locker.query('select txid_current_if_assigned() as xid')).rows[0].xid).toBeNull();
      // The first settlement's statement waits for the lock; the second waits behind it in the ledger.
      const firstTokens = await notWaiting(answers[0]!);
      const secondTokens = await notWaiting(answers[1]!);
      expect(await usage(first.id)).toMatchObject({ used: 0 });
      expect(await usage(second.id)).toMatchObject({ used: 0 });

      const closing = instance.close().then(() => (closed = true));
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(closed).toBe(false);
      await locker.query('commit');
      await closing;
      expect(await usage(first.id)).toEqual({ reserved: 0, used: firstTokens });
      expect(await usage(second.id)).toEqual({ reserved: 0, used: secondTokens });
      const { rows } = await pool.query(`select count(*)::int as n from chat.outbox where key = any($1) and topic = 'chat.events'`, [[apiChatId(first.id), apiChatId(second.id)]]);
      expect(rows[0].n).toBe(2);
    } finally {
      await locker.query('rollback').catch(() => undefined);
      locker.release();
      if (!closed) await instance.close().catch(() => undefined);
    }
  }, 60_000);

  it('OpenAI API: requests one after another settle in one statement within the linger, and no answer waits for it', async () => {
    const instance = await startChat({ PROVIDERS_FILE: providersFile, CHAT_DEFAULT_MODEL: 'openai/gpt-4o-mini', CHAT_USAGE_SETTLE_LINGER_MS: '10000' });
    try {
      const user = testUser();
      const ask = () => askCompletion(instance, user, 'echo: one after another');
      const started = Date.now();
      const answers = [await ask(), await ask(), await ask()];
      expect(Date.now() - started).toBeLessThan(8000);
      expect(answers.map((a) => a.statusCode)).toEqual([200, 200, 200]);
      expect(await usage(user.id)).toMatchObject({ used: 0 }); // all three still lingering
      const total = answers.reduce((n, a) => n + totalTokens(a), 0);
      await expect.poll(() => usage(user.id), { timeout: 20_000 }).toEqual({ reserved: 0, used: total });
      // Rows written by one statement carry one transaction id.
      const { rows } = await pool.query(`select txid::text from chat.outbox where key = $1 and topic = 'chat.events'`, [apiChatId(user.id)]);
      expect(rows).toHaveLength(3);
      expect(new Set(rows.map((r: { txid: string }) => r.txid)).size).toBe(1);
    } finally {
      await instance.close();
    }
  }, 60_000);

  it('OpenAI API: near the limit a settlement does not linger: it is written at once, with the ones lingering', async () => {
    const instance = await startChat({ PROVIDERS_FILE: providersFile, CHAT_DEFAULT_MODEL: 'openai/gpt-4o-mini', CHAT_USAGE_SETTLE_LINGER_MS: '60000' });
    try {
      // Far from any limit: its settlement lingers (a minute here).
      const far = testUser();
      const farAnswer = await askCompletion(instance, far, 'echo: far from the limit');
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(await usage(far.id)).toMatchObject({ used: 0 });
      // A limit of 200 tokens, and a request that may take about 20: what is left after its
      // reservation covers fewer than 16 such requests, so its settlement is written at once, and
      // the lingering one goes with it.
      const near = testUser();
      await pool.query(`insert into chat.quotas (user_id, monthly_tokens, updated_at) values ($1, 200, now())`, [near.id]);
      const nearAnswer = await askCompletion(instance, near, 'echo: near the limit');
      await expect.poll(() => usage(near.id), { timeout: 3_000, interval: 20 }).toEqual({ reserved: 0, used: totalTokens(nearAnswer) });
      expect(await usage(far.id)).toEqual({ reserved: 0, used: totalTokens(farAnswer) });
      // Closing writes a lingering settlement at once instead of waiting out its linger.
      const again = await askCompletion(instance, far, 'echo: far from the limit');
      const closing = Date.now();
      await instance.close();
      expect(Date.now() - closing).toBeLessThan(20_000);
      expect(await usage(far.id)).toEqual({ reserved: 0, used: totalTokens(farAnswer) + totalTokens(again) });
    } finally {
      await instance.close().catch(() => undefined);
    }
  }, 60_000);

  it('OpenAI API: what lingers is written first by a reservation not known to be far from the limit; a user without one lingers however long the request', async () => {
    const instance = await startChat({ PROVIDERS_FILE: providersFile, CHAT_DEFAULT_MODEL: 'openai/gpt-4o-mini', CHAT_USAGE_SETTLE_LINGER_MS: '60000', CHAT_QUOTA_LEASE_REQUESTS: '0' });
    try {
      // A limit far away: the first settlement lingers.
      const user = testUser();
      await pool.query(`insert into chat.quotas (user_id, monthly_tokens, updated_at) values ($1, 100000, now())`, [user.id]);
      const first = await askCompletion(instance, user, 'echo: lingering');
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(await usage(user.id)).toMatchObject({ used: 0 });
      // A request that may take 10,000 tokens: what is left does not cover 16 of it, so its
      // reservation writes the lingering settlement first, while it is still in flight (3 s
      // before its first token), not when it ends.
      sim.setFaults({ latencyMs: 3_000 }, 'big-and-slow');
      const big = instance.app.inject({
        method: 'POST',
        url: '/v1/chat/completions',
        headers: user.headers,
        payload: { model: 'openai/big-and-slow', max_tokens: 10_000, messages: [{ role: 'user', content: 'echo: big' }] },
      });
      await expect.poll(async () => (await usage(user.id))?.used, { timeout: 2_500, interval: 20 }).toBe(totalTokens(first));
      expect((await big).statusCode).toBe(200);

      // No limit at all: a request answered 11 s after its reservation (older than what is known of
      // anyone's room is trusted) still lingers.
      const unlimited = testUser();
      sim.setFaults({ latencyMs: 11_000 }, 'eleven-seconds');
      const slow = await instance.app.inject({
        method: 'POST',
        url: '/v1/chat/completions',
        headers: unlimited.headers,
        payload: { model: 'openai/eleven-seconds', max_tokens: 8, messages: [{ role: 'user', content: 'echo: slow' }] },
      });
      expect(slow.statusCode).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(await usage(unlimited.id)).toMatchObject({ used: 0 });
    } finally {
      await instance.close();
    }
  }, 60_000);

  it('OpenAI API: with room known to be ample the provider call does not wait for the reservation; a refusal aborts it', async () => {
    const user = testUser();
    const ask = (content: string, model = 'openai/paced') =>
      chat.app.inject({
        method: 'POST',
        url: '/v1/chat/completions',
        headers: user.headers,
        payload: { model, max_tokens: 8, messages: [{ role: 'user', content }] },
      });
    const seenBySim = (content: string) => sim.requests().find((r) => JSON.stringify(r.body).includes(content));

    // A first request: its reservation waits for nothing and tells chat the user has no limit.
    expect((await ask('echo: first', 'openai/gpt-4o-mini')).statusCode).toBe(200);
    await expect.poll(async () => (await usage(user.id))?.reserved, { timeout: 10_000 }).toBe(0);

    // Reservations now wait for this lock, yet the next request reaches the provider.
    const locker = await pool.connect();
    try {
      await locker.query('begin');
      await locker.query('lock table chat.quota_usage in share mode');
      const answer = ask('echo: went ahead');
      await eventually(() => seenBySim('went ahead'), 10_000);
      const sent = Date.now();
      await locker.query('commit');
      const response = await answer;
      expect(response.statusCode).toBe(200);
      expect(seenBySim('went ahead')!.startedAt).toBeLessThanOrEqual(sent);
    } finally {
      await locker.query('rollback').catch(() => undefined);
      locker.release();
    }
    await expect.poll(async () => (await usage(user.id))?.reserved, { timeout: 10_000 }).toBe(0);
    const spent = (await usage(user.id))!.used;

    // The limit drops below what a request reserves (as quota.set would write it) while chat still
    // remembers ample room: the provider call goes ahead, the reservation is refused, the call is
    // aborted long before its first token (a second away), and nothing is counted.
    await pool.query(
      `insert into chat.quotas (user_id, monthly_tokens, updated_at) values ($1, $2, now())
       on conflict (user_id) do update set monthly_tokens = excluded.monthly_tokens`,
      [user.id, spent + 10],
    );
    // The reservation waits for a lock until the simulator has the call (on a loaded machine the
    // refusal could otherwise come before the call is sent), then is refused.
    const held = await pool.connect();
    let refused: Awaited<ReturnType<typeof ask>>;
    try {
      await held.query('begin');
      await held.query('lock table chat.quota_usage in share mode');
      const answer = ask('echo: refused after all');
      await eventually(() => seenBySim('refused after all'), 10_000);
      await held.query('commit');
      refused = await answer;
    } finally {
      await held.query('rollback').catch(() => undefined);
      held.release();
    }
    expect(refused.statusCode).toBe(429);
    expect(refused.json()).toMatchObject({ error: { code: 'insufficient_quota' } });
    const call = await eventually(() => seenBySim('refused after all')?.abortedAt !== undefined && seenBySim('refused after all'), 5_000);
    // Aborted before its first token (a second after the call began), so nothing was generated.
    expect(call.abortedAt! - call.startedAt).toBeLessThan(1000);
    expect(call.chunksSent).toBe(0);
    expect(await usage(user.id)).toEqual({ reserved: 0, used: spent });
  }, 60_000);

  it('OpenAI API: a user far from their limit is served from a lease, without a statement; it is given back when idle and at close', async () => {
    const instance = await startChat({ PROVIDERS_FILE: providersFile, CHAT_DEFAULT_MODEL: 'openai/gpt-4o-mini', CHAT_USAGE_SETTLE_LINGER_MS: '0', CHAT_QUOTA_LEASE_REQUESTS: '16' });
    let closed = false;
    try {
      const ask = (user: ReturnType<typeof testUser>) => askCompletion(instance, user, 'echo: from the lease');
      const user = testUser();
      // The first reservation is exact and tells chat the user has no limit; the second takes a
      // lease: its statement reserves 16 requests' worth, and 15 stay reserved once it is settled.
      const first = await ask(user);
      const second = await ask(user);
      let spent = totalTokens(first) + totalTokens(second);
      await expect.poll(async () => (await usage(user.id))?.used, { timeout: 10_000 }).toBe(spent);
      const leased = (await usage(user.id))!.reserved;
      expect(leased).toBeGreaterThanOrEqual(15 * 8);

      // Reservation statements now wait for this lock; requests served from the lease do not.
      const locker = await pool.connect();
      try {
        await locker.query('begin');
        await locker.query('lock table chat.quota_usage in share mode');
        for (let i = 0; i < 4; i++) {
          const answer = await Promise.race([ask(user), new Promise<'waited'>((resolve) => setTimeout(() => resolve('waited'), 5_000))]);
          expect(answer).not.toBe('waited');
          spent += totalTokens(answer as Awaited<ReturnType<typeof ask>>);
        }
      } finally {
        await locker.query('rollback');
        locker.release();
      }
      // Unused for a second: the lease is given back, and the use is exact.
      await expect.poll(() => usage(user.id), { timeout: 10_000 }).toEqual({ reserved: 0, used: spent });

      // A user with a limit: a lease holds at most an eighth of what is left.
      const limited = testUser();
      await pool.query(`insert into chat.quotas (user_id, monthly_tokens, updated_at) values ($1, 2000, now())`, [limited.id]);
      const a = await ask(limited);
      const b = await ask(limited);
      await expect.poll(async () => (await usage(limited.id))?.used, { timeout: 10_000 }).toBe(totalTokens(a) + totalTokens(b));
      const held = (await usage(limited.id))!.reserved;
      expect(held).toBeGreaterThan(0);
      expect(held).toBeLessThanOrEqual((2000 - totalTokens(a)) / 8);

      // Closing gives every lease back.
      const third = await ask(user);
      await expect.poll(async () => (await usage(user.id))?.reserved, { timeout: 10_000 }).toBeGreaterThan(0);
      await instance.close();
      closed = true;
      expect(await usage(user.id)).toEqual({ reserved: 0, used: spent + totalTokens(third) });
      expect((await usage(limited.id))!.reserved).toBe(0);
    } finally {
      if (!closed) await instance.close().catch(() => undefined);
    }
  }, 60_000);

  it('OpenAI API: a request that fits once the lease is given back is not refused for the lease', async () => {
    // Give-backs linger 200 ms (they never hurry): the request that replaces the lease waits for its give-back only if refused.
    const instance = await startChat({ PROVIDERS_FILE: providersFile, CHAT_DEFAULT_MODEL: 'openai/gpt-4o-mini', CHAT_USAGE_SETTLE_LINGER_MS: '200', CHAT_QUOTA_LEASE_REQUESTS: '16' });
    try {
      const user = testUser();
      await pool.query(`insert into chat.quotas (user_id, monthly_tokens, updated_at) values ($1, 10000, now())`, [user.id]);
      const ask = (maxTokens: number) =>
        instance.app.inject({
          method: 'POST',
          url: '/v1/chat/completions',
          headers: user.headers,
          payload: { model: 'openai/gpt-4o-mini', max_tokens: maxTokens, messages: [{ role: 'user', content: 'echo: a lease in the way' }] },
        });
      // The second request takes a lease (an eighth of what is left at most).
      const first = await ask(8);
      const second = await ask(8);
      await expect.poll(async () => (await usage(user.id))?.used, { timeout: 10_000, interval: 20 }).toBe(totalTokens(first) + totalTokens(second));
      const { reserved: lease, used } = (await usage(user.id))!;
      expect(lease).toBeGreaterThan(100);
      // This one needs more than what is left beside the lease, and less than with it.
      const promptTokens = first.json<{ usage: { prompt_tokens: number } }>().usage.prompt_tokens;
      const big = await ask(10_000 - used - lease - promptTokens + Math.ceil(lease / 2));
      expect(big.statusCode, big.body).toBe(200);
      await expect.poll(() => usage(user.id), { timeout: 10_000, interval: 20 }).toEqual({ reserved: 0, used: used + totalTokens(big) });
    } finally {
      await instance.close();
    }
  }, 60_000);

  it('OpenAI API: closing waits for a lease give-back already under way', async () => {
    // Settlements linger 800 ms: the requests' are written before the lease is idle (a second),
    // and its give-back, started by the sweep 1.0-1.25 s after the last use, still lingers when
    // the service closes at 1.5 s. Whatever the timing, nothing may stay reserved after close.
    const instance = await startChat({ PROVIDERS_FILE: providersFile, CHAT_DEFAULT_MODEL: 'openai/gpt-4o-mini', CHAT_USAGE_SETTLE_LINGER_MS: '800', CHAT_QUOTA_LEASE_REQUESTS: '16' });
    let closed = false;
    try {
      const user = testUser();
      const first = await askCompletion(instance, user, 'echo: give it back');
      const second = await askCompletion(instance, user, 'echo: give it back'); // takes a lease
      const lastUse = Date.now();
      const spent = totalTokens(first) + totalTokens(second);
      await expect.poll(async () => (await usage(user.id))?.used, { timeout: 10_000, interval: 50 }).toBe(spent);
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, lastUse + 1_500 - Date.now())));
      await instance.close();
      closed = true;
      expect(await usage(user.id)).toEqual({ reserved: 0, used: spent });
    } finally {
      if (!closed) await instance.close().catch(() => undefined);
    }
  }, 60_000);

  it('OpenAI API: what a killed instance held (a request in flight, its lease) is given back by another once its holder expires; live holders keep theirs', async () => {
    // Instance A, a process of its own: renews its holder row every 300 ms, for 1.5 s.
    const env = testEnv('chat', {
      PROVIDERS_FILE: providersFile,
      CHAT_DEFAULT_MODEL: 'openai/gpt-4o-mini',
      CHAT_USAGE_SETTLE_LINGER_MS: '0',
      CHAT_QUOTA_LEASE_REQUESTS: '16',
      CHAT_QUOTA_HOLDER_TIMEOUT_MS: '1500',
      CHAT_SWEEP_INTERVAL_MS: '300',
    });
    const a = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'fixtures/chat-process.ts')], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<void>((resolve) => a.once('exit', () => resolve()));
    let b: TestChat | undefined;
    try {
      const port = await new Promise<number>((resolve, reject) => {
        createInterface({ input: a.stdout! }).on('line', (line) => {
          const match = /^listening (\d+)$/.exec(line);
          if (match) resolve(Number(match[1]));
        });
        void exited.then(() => reject(new Error('the chat process exited before listening')));
      });
      const user = testUser();
      const ask = (model = 'openai/gpt-4o-mini') =>
        fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
          method: 'POST',
          headers: { ...user.headers, 'content-type': 'application/json' },
          body: JSON.stringify({ model, max_tokens: 8, messages: [{ role: 'user', content: 'echo: held by A' }] }),
        });
      const tokensOf = async (response: Response) => {
        expect(response.status).toBe(200);
        return ((await response.json()) as { usage: { total_tokens: number } }).usage.total_tokens;
      };
      // The second request takes a lease (see the lease test), held by A; a third (30 s before its
      // first token) is in flight from it. A gives the rest of the lease back once it is idle; what
      // stays reserved then is that request's reservation, and A is killed.
      sim.setFaults({ latencyMs: 30_000 }, 'held-by-a');
      const spent = (await tokensOf(await ask())) + (await tokensOf(await ask()));
      await expect.poll(async () => (await usage(user.id))?.used, { timeout: 10_000, interval: 20 }).toBe(spent);
      const inFlight = ask('openai/held-by-a').catch(() => 'killed');
      await expect.poll(() => sim.requests().some((r) => r.model === 'held-by-a'), { timeout: 10_000, interval: 20 }).toBe(true);
      await expect.poll(async () => (await usage(user.id))!.reserved, { timeout: 10_000, interval: 50 }).toBeLessThan(15 * 8);
      a.kill('SIGKILL');
      await exited;
      expect(await inFlight).toBe('killed');
      const reserved = (await usage(user.id))!.reserved;
      expect(reserved).toBeGreaterThanOrEqual(8); // its prompt and 8 tokens of answer
      const holds = await pool.query('select holder, tokens::int from chat.quota_holds where user_id = $1', [user.id]);
      expect(holds.rows).toEqual([{ holder: expect.any(String), tokens: reserved }]);
      const holderA = holds.rows[0].holder as string;

      // Instance B takes a lease of its own for another user, and sweeps every 300 ms.
      b = await startChat({ PROVIDERS_FILE: providersFile, CHAT_DEFAULT_MODEL: 'openai/gpt-4o-mini', CHAT_USAGE_SETTLE_LINGER_MS: '0', CHAT_QUOTA_LEASE_REQUESTS: '16', CHAT_SWEEP_INTERVAL_MS: '300' });
      const other = testUser();
      const otherSpent = totalTokens(await askCompletion(b, other, 'echo: held by B')) + totalTokens(await askCompletion(b, other, 'echo: held by B'));
      await expect.poll(async () => (await usage(other.id))?.used, { timeout: 10_000 }).toBe(otherSpent);

      // What A held comes back within its timeout and a sweep; its use stays counted, once (the
      // request killed in flight was never settled: its use is not counted).
      await expect.poll(() => usage(user.id), { timeout: 10_000, interval: 100 }).toEqual({ reserved: 0, used: spent });
      expect((await pool.query('select 1 from chat.quota_holders where holder = $1', [holderA])).rows).toEqual([]);
      expect((await pool.query('select 1 from chat.quota_holds where holder = $1', [holderA])).rows).toEqual([]);
      // B's lease is B's to give back (when idle): what B holds is what is reserved, then nothing,
      // and its empty hold is deleted at a renewal while B runs.
      const both = await pool.query(
        'select u.reserved::int as reserved, (select coalesce(sum(h.tokens), 0)::int from chat.quota_holds h where h.user_id = u.user_id) as held from chat.quota_usage u where u.user_id = $1',
        [other.id],
      );
      expect(both.rows[0].held).toBe(both.rows[0].reserved);
      await expect.poll(() => usage(other.id), { timeout: 10_000 }).toEqual({ reserved: 0, used: otherSpent });
      await expect.poll(async () => (await pool.query('select 1 from chat.quota_holds where user_id = $1', [other.id])).rows.length, { timeout: 5_000 }).toBe(0);
      await b.close();
      b = undefined;
      expect(await usage(other.id)).toEqual({ reserved: 0, used: otherSpent });
      expect((await pool.query('select 1 from chat.quota_holds where user_id = $1', [other.id])).rows).toEqual([]);
    } finally {
      a.kill('SIGKILL');
      await exited;
      await b?.close().catch(() => undefined);
    }
  }, 60_000);

  /**
   * Another instance's sweep, as if `instance` had not renewed `holder` in time: its row is gone,
   * its holds given back (with those of any other expired holder in this shared database). The
   * tokens given back.
   */
  async function judgeDead(instance: TestChat, holder: string): Promise<number> {
    const client = await pool.connect();
    try {
      await client.query('begin');
      await client.query('delete from chat.quota_holders where holder = $1', [holder]);
      const sweeper = new QuotaHolders({
        sql: { rows: async (_name, text, values) => (await client.query(text, values)).rows },
        log: instance.app.log,
        timeoutMs: 60_000,
        intervalMs: 60_000,
        onRevived: () => undefined,
      });
      const tokens = await sweeper.sweep();
      await client.query('commit');
      return tokens;
    } finally {
      client.release();
    }
  }

  it('OpenAI API: an instance judged dead while alive gives back nothing twice, and gives its leases back when it renews', async () => {
    const instance = await startChat({ PROVIDERS_FILE: providersFile, CHAT_DEFAULT_MODEL: 'openai/gpt-4o-mini', CHAT_USAGE_SETTLE_LINGER_MS: '0', CHAT_QUOTA_LEASE_REQUESTS: '16', CHAT_SWEEP_INTERVAL_MS: '200' });
    try {
      const user = testUser();
      let spent = totalTokens(await askCompletion(instance, user, 'echo: judged dead')) + totalTokens(await askCompletion(instance, user, 'echo: judged dead'));
      await expect.poll(async () => (await usage(user.id))?.used, { timeout: 10_000, interval: 20 }).toBe(spent);
      // A request in flight (a second before its first token), served from the lease; and 1000 tokens
      // reserved by someone else (a chat reply of the same user, say), which must stay reserved.
      const inFlight = instance.app.inject({
        method: 'POST',
        url: '/v1/chat/completions',
        headers: user.headers,
        payload: { model: 'openai/paced', max_tokens: 8, messages: [{ role: 'user', content: 'echo: in flight' }] },
      });
      await pool.query('update chat.quota_usage set reserved = reserved + 1000 where user_id = $1', [user.id]);
      const [{ holder, tokens }] = (await pool.query('select holder, tokens::int from chat.quota_holds where user_id = $1', [user.id])).rows;
      expect(tokens).toBeGreaterThanOrEqual(15 * 8);

      expect(await judgeDead(instance, holder)).toBeGreaterThanOrEqual(tokens);
      expect(await usage(user.id)).toEqual({ reserved: 1000, used: spent });
      // It renews (every 200 ms) and finds itself revived: it goes on under a new holder id, gives
      // its lease back and no longer serves from it, so a request needs a reservation statement
      // again, which waits for this lock. (Checked within a second of the lease's last use, before
      // it would idle out anyway.)
      await expect.poll(() => instance.app.chat.holders.id, { timeout: 5_000, interval: 20 }).not.toBe(holder);
      expect((await pool.query('select 1 from chat.quota_holders where holder = $1', [holder])).rows).toEqual([]);
      const locker = await pool.connect();
      let pending: ReturnType<typeof askCompletion> | undefined;
      try {
        await locker.query('begin');
        await locker.query('lock table chat.quota_usage in share mode');
        pending = askCompletion(instance, user, 'echo: judged dead');
        const first = await Promise.race([pending, new Promise<'waited'>((resolve) => setTimeout(() => resolve('waited'), 1_500))]);
        expect(first).toBe('waited');
      } finally {
        await locker.query('rollback');
        locker.release();
      }
      spent += totalTokens(await pending!);
      // The request in flight ends and is settled: its use counts; its reservation, already given
      // back, is not given back again (nor is the lease's rest): the 1000 stay reserved.
      const late = await inFlight;
      expect(late.statusCode).toBe(200);
      spent += totalTokens(late);
      await instance.close();
      expect(await usage(user.id)).toEqual({ reserved: 1000, used: spent });
      expect((await pool.query('select 1 from chat.quota_holds where holder = $1', [holder])).rows).toEqual([]);
    } finally {
      await instance.close().catch(() => undefined);
    }
  }, 60_000);

  it('OpenAI API: an instance judged dead while alive settles what it reserved before against its old holder, never against what it reserves since', async () => {
    sim.setFaults({ latencyMs: 3_000 }, 'before-sweep');
    sim.setFaults({ latencyMs: 6_000 }, 'after-sweep');
    const instance = await startChat({ PROVIDERS_FILE: providersFile, CHAT_DEFAULT_MODEL: 'openai/gpt-4o-mini', CHAT_USAGE_SETTLE_LINGER_MS: '0', CHAT_QUOTA_LEASE_REQUESTS: '0', CHAT_SWEEP_INTERVAL_MS: '200' });
    try {
      const user = testUser();
      const ask = (model: string) =>
        instance.app.inject({
          method: 'POST',
          url: '/v1/chat/completions',
          headers: user.headers,
          payload: { model: `openai/${model}`, max_tokens: 8, messages: [{ role: 'user', content: `echo: ${model}` }] },
        });
      const heldBy = async () => (await pool.query('select holder, tokens::int from chat.quota_holds where user_id = $1 and tokens > 0', [user.id])).rows as Array<{ holder: string; tokens: number }>;
      // A request reserved under the first holder id, 3 s before its answer; then the sweep.
      const before = ask('before-sweep');
      await expect.poll(async () => (await heldBy()).length, { timeout: 5_000, interval: 20 }).toBe(1);
      const { holder: first, tokens: reservedBefore } = (await heldBy())[0]!;
      expect(await judgeDead(instance, first)).toBeGreaterThanOrEqual(reservedBefore);
      expect((await usage(user.id))!.reserved).toBe(0);
      await expect.poll(() => instance.app.chat.holders.id, { timeout: 5_000, interval: 20 }).not.toBe(first);
      const second = instance.app.chat.holders.id;

      // A request reserved since, under the new id, in flight until well after the first ends.
      const after = ask('after-sweep');
      await expect.poll(async () => (await usage(user.id))!.reserved, { timeout: 5_000, interval: 20 }).toBeGreaterThan(0);
      const reservedAfter = (await usage(user.id))!.reserved;
      expect(await heldBy()).toEqual([{ holder: second, tokens: reservedAfter }]);

      // The first ends and is settled: its use counts, and it gives back nothing (the sweep did).
      // The second's reservation stays whole: held under the new id, which the first's settlement
      // does not touch.
      const firstAnswer = await before;
      expect(firstAnswer.statusCode).toBe(200);
      let spent = totalTokens(firstAnswer);
      await expect.poll(async () => (await usage(user.id))!.used, { timeout: 5_000, interval: 20 }).toBe(spent);
      expect(await usage(user.id)).toEqual({ reserved: reservedAfter, used: spent });
      expect(await heldBy()).toEqual([{ holder: second, tokens: reservedAfter }]);

      const secondAnswer = await after;
      expect(secondAnswer.statusCode).toBe(200);
      spent += totalTokens(secondAnswer);
      await expect.poll(() => usage(user.id), { timeout: 5_000, interval: 20 }).toEqual({ reserved: 0, used: spent });
      await instance.close();
      expect((await pool.query('select holder from chat.quota_holds where holder = any($1::uuid[])', [[first, second]])).rows).toEqual([]);
      expect((await pool.query('select holder from chat.quota_holders where holder = any($1::uuid[])', [[first, second]])).rows).toEqual([]);
    } finally {
      await instance.close().catch(() => undefined);
    }
  }, 60_000);

  it('settles reservations of several holders of one user in one statement, each against its own hold', async () => {
    const turns = turnsRepository(poolRunner(pool));
    const user = testUser();
    const [old, current, message] = [randomUUID(), randomUUID(), 30];
    const month = '2026-12-01';
    expect((await turns.reserveQuota(user.id, month, 100, old)).granted).toBe(true);
    expect((await turns.reserveQuota(user.id, month, 50, current)).granted).toBe(true);
    await pool.query('update chat.quota_usage set reserved = reserved + $2 where user_id = $1', [user.id, message]);
    // The old holder's hold was given back but for 10 (say, a sweep), so its settlement gives back 10.
    await pool.query('update chat.quota_holds set tokens = 10 where holder = $1', [old]);
    await pool.query('update chat.quota_usage set reserved = reserved - 90 where user_id = $1', [user.id]);
    await turns.settleAndPublish([
      { userId: user.id, month, holder: old, reserved: 60, used: 7, events: [] },
      { userId: user.id, month, holder: current, reserved: 20, used: 5, events: [] },
      { userId: user.id, month, holder: old, reserved: 40, used: 3, events: [] },
      { userId: user.id, month, reserved: message, used: 11, events: [] },
    ]);
    const { rows } = await pool.query('select reserved::int, used::int from chat.quota_usage where user_id = $1 and month = $2', [user.id, month]);
    expect(rows).toEqual([{ reserved: 30, used: 26 }]); // 10 + 50 + 30 reserved, less 10 (old), 20 (current), 30 (message)
    const holds = await pool.query('select holder, tokens::int from chat.quota_holds where user_id = $1 order by tokens', [user.id]);
    expect(holds.rows).toEqual([{ holder: old, tokens: 0 }, { holder: current, tokens: 30 }]);
    await pool.query('delete from chat.quota_holds where user_id = $1', [user.id]);
  });

  it('answers an identical temperature-0 request of the same user from the cache, marked cached and counted', async () => {
    const user = testUser();
    const before = sim.requests().filter((r) => r.model === 'cache-model').length;
    const ask = async (asker = user) => {
      const chatId = await createChat(chat.app, asker, { systemPrompt: 'You are a cache test.', model: 'openai/cache-model' });
      const res = await chat.app.inject({
        method: 'POST',
        url: `/api/v1/chats/${chatId}/messages`,
        headers: { ...asker.headers, accept: 'text/event-stream' },
        payload: { content: 'What is a river?', temperature: 0 },
      });
      return parseSse(res.body);
    };
    const first = await ask();
    const second = await ask();
    const doneOf = (events: ReturnType<typeof parseSse>) => (events.at(-1)!.data as { message: { content: string; cached: boolean; provider: string; usage: unknown } }).message;
    expect(doneOf(first).cached).toBe(false);
    expect(doneOf(second)).toMatchObject({ cached: true, content: doneOf(first).content, provider: 'openai', usage: doneOf(first).usage });
    expect(second.map((e) => e.event)).toEqual(['message', 'delta', 'usage', 'done']);
    expect(sim.requests().filter((r) => r.model === 'cache-model').length - before).toBe(1);
    const metrics = (await chat.app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toMatch(/vivier_chat_response_cache_hits_total\{[^}]*\} 1/);
    // Another user asking the same is answered by the provider: whether someone else asked it is theirs.
    const other = await ask(testUser());
    expect(doneOf(other).cached).toBe(false);
    expect(sim.requests().filter((r) => r.model === 'cache-model').length - before).toBe(2);
    // A regenerate (which keeps temperature 0) asks for another reply: not the cached one.
    const regenChat = await createChat(chat.app, user, { systemPrompt: 'You are a cache test.', model: 'openai/cache-model' });
    const turn = (await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${regenChat}/messages`, headers: user.headers, payload: { content: 'What is a river?', temperature: 0 } })).json();
    expect(turn.assistantMessage.cached).toBe(true);
    const again = await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${regenChat}/messages/${turn.assistantMessage.id}/regenerate`, headers: user.headers });
    expect(again.json().assistantMessage.cached).toBe(false);
    expect(sim.requests().filter((r) => r.model === 'cache-model').length - before).toBe(3);
    // Another temperature is not cached.
    const chatId = await createChat(chat.app, user, { systemPrompt: 'You are a cache test.', model: 'openai/cache-model' });
    const warm = await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content: 'What is a river?', temperature: 0.7 } });
    expect(warm.json().assistantMessage.cached).toBe(false);
  });

  it('keys the cache by what a model id routes to, so an alias pointed elsewhere is answered anew', () => {
    const cache = new ResponseCache(null as never, 60, null as never, null as never);
    const request = { messages: [{ role: 'user' as const, content: 'hi' }], maxTokens: 10, promptTokens: 1, temperature: 0 };
    const alias = (model: string) => ({ id: 'fast', type: 'alias' as const, strategy: 'ordered' as const, contextWindow: 8000, deployments: [{ id: 'd1', provider: 'openai', model }] });
    const key = cache.keyOf('u1', alias('gpt-4o-mini'), request);
    expect(key).toBeDefined();
    expect(cache.keyOf('u1', alias('gpt-4o-mini'), request)).toBe(key);
    expect(cache.keyOf('u1', alias('gpt-4o'), request)).not.toBe(key);
    expect(cache.keyOf('u2', alias('gpt-4o-mini'), request)).not.toBe(key);
  });

  it('queues an async reply for the worker and stores the result the worker reports', async () => {
    await withOutboxHeld(async () => {
      const user = testUser();
      const chatId = await createChat(chat.app, user, { systemPrompt: 'Be kind.' });
      const res = await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content: 'Write a poem', async: true } });
      expect(res.statusCode).toBe(202);
      const turn = res.json();
      expect(turn.assistantMessage).toMatchObject({ status: 'queued', role: 'assistant', content: '', replyTo: turn.userMessage.id });
      const job = await pool.query(`select envelope from chat.outbox where topic = 'jobs.completion' and key = $1`, [turn.assistantMessage.id]);
      expect(job.rows[0].envelope).toMatchObject({
        type: 'vivier.jobs.completion.requested.v1',
        data: {
          chatId,
          userId: user.id,
          userMessageId: turn.userMessage.id,
          assistantMessageId: turn.assistantMessage.id,
          model: 'openai/gpt-4o-mini',
          systemPrompt: 'Be kind.',
          messages: [{ role: 'user', content: 'Write a poem' }],
          regenerate: false,
        },
      });

      // A client follows the queued reply while the worker works.
      const following = streamSse(`${chat.url}/api/v1/chats/${chatId}/messages/${turn.assistantMessage.id}/stream`, { headers: user.headers });
      await new Promise((resolve) => setTimeout(resolve, 300));
      const finished = createEvent(EVENTS.workerCompletionFinished, {
        assistantMessageId: turn.assistantMessage.id,
        chatId,
        userId: user.id,
        userMessageId: turn.userMessage.id,
        status: 'completed',
        content: 'Roses are red.',
        provider: 'openai',
        model: 'openai/gpt-4o-mini',
        usage: { promptTokens: 12, completionTokens: 4 },
        latencyMs: 321,
        timeToFirstTokenMs: 45,
      });
      await produce(finished);
      await produce(finished); // redelivered: one effect
      const followed = await following;
      expect(followed.events.map((e) => [e.id, e.event])).toEqual([
        [1, 'message'],
        [2, 'delta'],
        [3, 'usage'],
        [4, 'done'],
      ]);
      expect(followed.events[3]!.data).toMatchObject({ message: { status: 'completed', content: 'Roses are red.', usage: { promptTokens: 12, completionTokens: 4 } } });
      const stored = (await chat.app.inject({ method: 'GET', url: `/api/v1/chats/${chatId}/messages/${turn.assistantMessage.id}`, headers: user.headers })).json();
      expect(stored).toMatchObject({ status: 'completed', content: 'Roses are red.', latencyMs: 321, timeToFirstTokenMs: 45, provider: 'openai' });
      const completed = await eventually(async () => {
        const { rows } = await pool.query(`select envelope from chat.outbox where envelope->>'type' = 'vivier.chat.message.completed.v1' and envelope->>'subject' = $1`, [turn.assistantMessage.id]);
        return rows.length > 0 && rows;
      });
      expect(completed).toHaveLength(1);
      expect((await usage(user.id))!).toEqual({ reserved: 0, used: 16 });
      // No relay has let the job out meanwhile: no worker but this test could have answered it.
      const held = await pool.query(`select published_at from chat.outbox where topic = 'jobs.completion' and key = $1`, [turn.assistantMessage.id]);
      expect(held.rows[0].published_at).toBeNull();
    });
  }, 90_000);

  it('cancels a queued reply and tells the worker; a late worker result leaves it cancelled, and its usage is counted once', async () => {
    const user = testUser();
    await setQuota(user.id, 100_000);
    const chatId = await createChat(chat.app, user);
    const prefix = chat.app.redis.options.keyPrefix ?? '';
    const subscriber = chat.app.redis.duplicate({ keyPrefix: '', enableOfflineQueue: true });
    const told: string[] = [];
    subscriber.on('message', (_channel: string, id: string) => told.push(id));
    await subscriber.subscribe(`${prefix}chat:cancel`);
    try {
      // Cancelled before any worker could see the job (see withOutboxHeld).
      const { turn, cancel } = await withOutboxHeld(async () => {
        const turn = (await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content: 'Later', async: true } })).json();
        const cancel = await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages/${turn.assistantMessage.id}/cancel`, headers: user.headers });
        return { turn, cancel };
      });
      expect(cancel.statusCode).toBe(202);
      expect(cancel.json()).toMatchObject({ status: 'cancelled' });
      expect((await usage(user.id))!).toEqual({ reserved: 0, used: 0 });
      // The worker is told at once, and a job that comes up later finds the flag (it lasts a day).
      await vi.waitFor(() => expect(told).toContain(turn.assistantMessage.id), { timeout: 5_000 });
      expect(await chat.app.redis.pttl(`chat:reply:${turn.assistantMessage.id}:cancel`)).toBeGreaterThan(23 * 3_600_000);

      // The worker had started it: it stopped, and reports the partial reply with what it used.
      const event = workerFinished(turn, chatId, user.id, 'Too late.', { promptTokens: 1, completionTokens: 2 });
      const copy = workerFinished(turn, chatId, user.id, 'Too late.', { promptTokens: 1, completionTokens: 2 });
      await produce(event);
      await produce(event); // redelivered
      await produce(copy); // a copy with another event id
      await handled(event.id);
      await handled(copy.id);
      const stored = (await chat.app.inject({ method: 'GET', url: `/api/v1/chats/${chatId}/messages/${turn.assistantMessage.id}`, headers: user.headers })).json();
      expect(stored).toMatchObject({ status: 'cancelled', content: '' });
      expect((await usage(user.id))!).toEqual({ reserved: 0, used: 3 });
      const { rows } = await pool.query('select prompt_tokens, completion_tokens from chat.messages where id = $1', [turn.assistantMessage.id]);
      expect(rows).toEqual([{ prompt_tokens: 1, completion_tokens: 2 }]);
      // Analytics hear of them once: one usage_recorded, beside the one message.completed of the cancel.
      const reported = await pool.query(
        `select envelope->>'type' as type, envelope->'data' as data from chat.outbox
         where topic = 'chat.events' and envelope->'data'->>'messageId' = $1 order by id`,
        [turn.assistantMessage.id],
      );
      expect(reported.rows.map((r: { type: string }) => r.type)).toEqual(['vivier.chat.message.completed.v1', 'vivier.chat.message.usage_recorded.v1']);
      expect(reported.rows[0].data).toMatchObject({ status: 'cancelled', usage: { promptTokens: 0, completionTokens: 0 } });
      expect(reported.rows[1].data).toMatchObject({ chatId, userId: user.id, provider: 'openai', model: 'openai/gpt-4o-mini', usage: { promptTokens: 1, completionTokens: 2 } });
    } finally {
      subscriber.disconnect();
    }
  }, 90_000);

  it('counts the usage of a queued reply whose chat was deleted before the worker reported it, and releases its reservation', async () => {
    const user = testUser();
    await setQuota(user.id, 100_000);
    const chatId = await createChat(chat.app, user);
    // Held to the end: a worker of another test file would otherwise answer the job too.
    await withOutboxHeld(async () => {
      const turn = (await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content: 'Later', async: true, maxTokens: 500 } })).json();
      expect((await usage(user.id))!.reserved).toBeGreaterThan(500);
      expect((await chat.app.inject({ method: 'DELETE', url: `/api/v1/chats/${chatId}`, headers: user.headers })).statusCode).toBe(204);
      expect((await usage(user.id))!.reserved).toBe(0);
      // The worker is told to skip the job whenever it comes up, as for a cancel (it was 30 s).
      expect(await chat.app.redis.pttl(`chat:reply:${turn.assistantMessage.id}:cancel`)).toBeGreaterThan(23 * 3_600_000);
      const event = workerFinished(turn, chatId, user.id, 'Done anyway.', { promptTokens: 7, completionTokens: 3 });
      await produce(event);
      await produce(event); // redelivered: counted once
      await handled(event.id);
      await new Promise((r) => setTimeout(r, 300));
      expect(await usage(user.id)).toEqual({ reserved: 0, used: 10 });
    });
    const { rows } = await pool.query(
      `select envelope->'data'->>'status' as status from chat.outbox where envelope->>'type' = 'vivier.chat.message.completed.v1' and envelope->'data'->>'chatId' = $1`,
      [chatId],
    );
    expect(rows).toEqual([{ status: 'completed' }]);
  }, 90_000);
});
