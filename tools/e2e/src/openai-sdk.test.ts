import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DevKafka } from '@vivier/dev-kafka';
import { startKafka, startServiceProcess, stopProcess, waitReady, type ServiceProcess, freePort } from '@vivier/dev-stack';
import { isolatedDatabase } from '@vivier/dev-stack/test-infra';
import { startProviderSim, type ProviderSim } from '@vivier/provider-sim';
import { testEnv } from '@vivier/service-kit/testing';

const RATE_LIMIT = 10;

// The official `openai` client, unmodified, against the gateway (API key) → chat → the provider
// simulator speaking OpenAI's wire protocol: what any OpenAI-compatible tool would do.
describe('the OpenAI-compatible API with the official openai client', () => {
  let dev: DevKafka;
  let sim: ProviderSim;
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;
  const procs: ServiceProcess[] = [];
  let gateway = '';
  let apiKey = '';
  let chatDb: pg.Client;

  beforeAll(async () => {
    // Own broker (no joining the run's consumer groups) and so own database (see isolatedDatabase).
    dev = await startKafka();
    database = await isolatedDatabase('openai_sdk');
    sim = await startProviderSim({ port: 0 });
    sim.setFaults({ tokensPerSecond: 20 }, 'slow');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'vivier-openai-e2e-'));
    const providersFile = path.join(dir, 'providers.json');
    writeFileSync(providersFile, JSON.stringify({ providers: { openai: { baseUrl: `${sim.url}/v1`, apiKey: 'sk-sim' } } }));
    const common = { KAFKA_BROKERS: dev.bootstrap.join(','), LOG_LEVEL: 'warn' };
    const [authPort, chatPort, gatewayPort] = [await freePort(), await freePort(), await freePort()];
    const auth = startServiceProcess('auth', { port: authPort, env: { ...process.env, ...testEnv('auth', { ...common, DATABASE_URL: database.serviceUrls.auth }) } });
    const chat = startServiceProcess('chat', {
      port: chatPort,
      env: { ...process.env, ...testEnv('chat', { ...common, DATABASE_URL: database.serviceUrls.chat, PROVIDERS_FILE: providersFile, CHAT_DEFAULT_MODEL: 'openai/gpt-4o-mini' }) },
    });
    procs.push(auth, chat);
    await Promise.all([waitReady(auth), waitReady(chat)]);
    const gw = startServiceProcess('gateway', {
      port: gatewayPort,
      env: {
        ...process.env,
        ...testEnv('gateway', {
          ...common,
          AUTH_URL: `http://127.0.0.1:${authPort}`,
          CHAT_URL: `http://127.0.0.1:${chatPort}`,
          ADMIN_URL: 'http://127.0.0.1:9',
          RATE_LIMIT_PER_USER: String(RATE_LIMIT),
          RATE_LIMIT_WINDOW_SECONDS: '60',
        }),
      },
    });
    procs.push(gw);
    await waitReady(gw);
    gateway = `http://127.0.0.1:${gatewayPort}`;

    const registered = await fetch(`${gateway}/api/v1/auth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: `sdk-${Date.now()}@example.com`, password: 'an sdk user password' }),
    });
    const { accessToken } = (await registered.json()) as { accessToken: string };
    const key = await fetch(`${gateway}/api/v1/auth/api-keys`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${accessToken}` },
      body: JSON.stringify({ name: 'sdk test' }),
    });
    apiKey = ((await key.json()) as { key: string }).key;
    chatDb = new pg.Client({ connectionString: database.serviceUrls.chat });
    await chatDb.connect();
  }, 120_000);
  afterAll(async () => {
    await chatDb?.end();
    for (const p of procs.reverse()) await stopProcess(p);
    await sim?.close();
    await dev?.stop();
    await database?.drop();
  });

  const client = () => new OpenAI({ apiKey, baseURL: `${gateway}/v1`, maxRetries: 0 });

  const completedEvents = async () =>
    (await chatDb.query(`select envelope->'data' as data from chat.outbox where envelope->>'type' = 'vivier.chat.message.completed.v1' order by id`)).rows.map(
      (r) => r.data as { status: string; usage: { promptTokens: number; completionTokens: number }; model: string },
    );

  it('lists models, completes, streams with the usage chunk, and refuses a bad model with NotFoundError', async () => {
    const openai = client();
    const models = await openai.models.list();
    expect(models.data.map((m) => m.id)).toContain('openai/gpt-4o-mini');

    const completion = await openai.chat.completions.create({ model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'echo: hello sdk' }] });
    expect(completion.object).toBe('chat.completion');
    expect(completion.choices[0]!.message).toMatchObject({ role: 'assistant', content: 'hello sdk' });
    expect(completion.choices[0]!.finish_reason).toBe('stop');
    expect(completion.usage!.completion_tokens).toBeGreaterThan(0);
    expect(completion.usage!.total_tokens).toBe(completion.usage!.prompt_tokens + completion.usage!.completion_tokens);

    const stream = await openai.chat.completions.create({
      model: 'openai/gpt-4o-mini',
      messages: [{ role: 'user', content: 'echo: one two three four' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('one two three four');
    expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe('stop');
    // The usage chunk exactly as OpenAI sends it: last, with empty choices.
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ completion_tokens: expect.any(Number), prompt_tokens: expect.any(Number) });
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);

    const bad = openai.chat.completions.create({ model: 'nobody/no-such-model', messages: [{ role: 'user', content: 'hi' }] });
    await expect(bad).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    await expect(bad).rejects.toMatchObject({ status: 404, code: 'model_not_found', type: 'invalid_request_error' });

    const invalid = openai.chat.completions.create({ model: 'openai/gpt-4o-mini', messages: [] });
    await expect(invalid).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    await expect(invalid).rejects.toMatchObject({ status: 400, type: 'invalid_request_error', code: 'validation_failed' });

    // Tool calling is refused, naming the parameter, rather than answered as if no tool were offered.
    const tools = openai.chat.completions.create({
      model: 'openai/gpt-4o-mini',
      messages: [{ role: 'user', content: 'what is the weather?' }],
      tools: [{ type: 'function', function: { name: 'weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
    });
    await expect(tools).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    await expect(tools).rejects.toMatchObject({ status: 400, type: 'invalid_request_error', code: 'unsupported_parameter', param: 'tools' });

    // Both completions were counted like any reply.
    await expect.poll(async () => (await completedEvents()).filter((e) => e.status === 'completed').length, { timeout: 10_000 }).toBe(2);
    // …and settled against the monthly quota: the reported tokens used, and nothing left reserved
    // once chat has given back the lease the second request took (a second after its last use).
    const events = await completedEvents();
    const used = events.reduce((n, e) => n + e.usage.promptTokens + e.usage.completionTokens, 0);
    await expect
      .poll(async () => (await chatDb.query('select reserved::int, used::int from chat.quota_usage')).rows, { timeout: 10_000 })
      .toEqual([{ reserved: 0, used }]);
  }, 60_000);

  it('aborts the provider request within a second when the client goes away mid-stream, and counts what was generated', async () => {
    const openai = client();
    const controller = new AbortController();
    const stream = await openai.chat.completions.create(
      { model: 'openai/slow', messages: [{ role: 'user', content: `echo: ${Array.from({ length: 60 }, (_, i) => `w${i}`).join(' ')}` }], stream: true },
      { signal: controller.signal },
    );
    let seen = 0;
    let abortedAt = 0;
    try {
      for await (const chunk of stream) {
        if (chunk.choices[0]?.delta.content) seen += 1;
        if (seen === 3) {
          abortedAt = Date.now();
          controller.abort(); // the client goes away: its connection closes
          break;
        }
      }
    } catch {
      // an aborted stream may end with an abort error; either way the client has gone
    }
    expect(abortedAt).toBeGreaterThan(0);
    const abort = await (async () => {
      const deadline = Date.now() + 5000;
      for (;;) {
        const found = sim.stats().aborts.find((a) => a.model === 'slow' && a.abortedAt >= abortedAt);
        if (found || Date.now() > deadline) return found;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    expect(abort, 'the simulator saw the upstream request aborted').toBeDefined();
    expect(abort!.abortedAt - abortedAt).toBeLessThan(1000);
    await expect.poll(async () => (await completedEvents()).find((e) => e.status === 'cancelled'), { timeout: 10_000 }).toBeDefined();
    const cancelled = (await completedEvents()).find((e) => e.status === 'cancelled')!;
    expect(cancelled.usage.completionTokens).toBeGreaterThanOrEqual(3);
    expect(cancelled.usage.completionTokens).toBeLessThan(60);
  }, 60_000);

  it('aborts the provider request within a second when the client of a non-streamed completion goes away, and counts what was generated', async () => {
    const openai = client();
    const controller = new AbortController();
    const before = (await completedEvents()).length;
    const startedAt = Date.now();
    const completion = openai.chat.completions.create(
      { model: 'openai/slow', messages: [{ role: 'user', content: `echo: ${Array.from({ length: 60 }, (_, i) => `w${i}`).join(' ')}` }] },
      { signal: controller.signal },
    );
    completion.catch(() => undefined);
    // 20 tokens a second: a few have been generated, nothing has been answered yet.
    await new Promise((r) => setTimeout(r, 500));
    const abortedAt = Date.now();
    controller.abort();
    await expect(completion).rejects.toBeInstanceOf(OpenAI.APIUserAbortError);
    await expect
      .poll(() => sim.stats().aborts.find((a) => a.model === 'slow' && a.abortedAt >= abortedAt), { timeout: 5000, interval: 20 })
      .toBeDefined();
    const abort = sim.stats().aborts.find((a) => a.model === 'slow' && a.abortedAt >= abortedAt)!;
    expect(abort.abortedAt - abortedAt).toBeLessThan(1000);
    await expect.poll(async () => (await completedEvents()).length, { timeout: 10_000 }).toBe(before + 1);
    const cancelled = (await completedEvents()).at(-1)!;
    expect(cancelled.status).toBe('cancelled');
    expect(cancelled.usage.completionTokens).toBeGreaterThanOrEqual(1);
    expect(cancelled.usage.completionTokens).toBeLessThan(60);
    expect(abortedAt - startedAt).toBeLessThan(3000); // the request really was cut mid-way
  }, 60_000);

  it('answers the gateway rate limit with RateLimitError and Retry-After', async () => {
    const openai = client();
    let limited: unknown;
    for (let i = 0; i < RATE_LIMIT + 2 && !limited; i += 1) {
      try {
        await openai.models.list();
      } catch (error) {
        limited = error;
      }
    }
    expect(limited).toBeInstanceOf(OpenAI.RateLimitError);
    const error = limited as InstanceType<typeof OpenAI.RateLimitError>;
    expect(error.status).toBe(429);
    expect(error.code).toBe('rate_limit_exceeded');
    expect(Number(error.headers?.get('retry-after'))).toBeGreaterThan(0);
  }, 30_000);
});
