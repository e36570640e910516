import { startProviderSim, type ProviderSim } from '@vivier/provider-sim';
import { EVENTS } from '@vivier/contracts';
import { countTokens } from '@vivier/providers';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { chatPool, createChat, eventually, parseSse, startChat, testUser, writeProvidersFile, type SseEvent, type TestChat } from './helpers';

// Replies through every wire protocol, over real HTTP to the provider simulator, and what the
// service makes of each fault the simulator injects.
describe('providers through the chat service', () => {
  let sim: ProviderSim;
  let chat: TestChat;
  const user = testUser();

  beforeAll(async () => {
    sim = await startProviderSim({ port: 0 });
    const file = writeProvidersFile({
      providers: {
        openai: { baseUrl: `${sim.url}/v1`, apiKey: 'sk-test' },
        anthropic: { baseUrl: sim.url, apiKey: 'sk-ant-test' },
        gemini: { baseUrl: sim.url, apiKey: 'AIza-test' },
        ollama: { baseUrl: sim.url },
        compat: { kind: 'openai_compatible', baseUrl: `${sim.url}/v1`, apiKey: 'compat-key', includeUsage: false },
        // A key the simulator refuses, as OpenAI does: "Incorrect API key provided: invalid****."
        revoked: { kind: 'openai_compatible', baseUrl: `${sim.url}/v1`, apiKey: 'invalid-platform-key' },
      },
      deployments: [
        { id: 'tiny', provider: 'openai', model: 'tiny-window', contextWindow: 400 },
        { id: 'mid', provider: 'openai', model: 'mid-window', contextWindow: 6000 },
        { id: 'chain-1', provider: 'openai', model: 'chain-a' },
        { id: 'chain-2', provider: 'anthropic', model: 'chain-b' },
        { id: 'chain-3', provider: 'gemini', model: 'chain-c' },
        { id: 'breaker', provider: 'openai', model: 'breaker-model' },
        { id: 'long-name', provider: 'openai', model: `long-${'m'.repeat(250)}` },
      ],
      aliases: [
        { alias: 'chain', deployments: ['chain-1', 'chain-2', 'chain-3'] },
        { alias: 'long', deployments: ['long-name'] },
      ],
      router: { backoffBaseMs: 20, backoffMaxMs: 100, maxRetries: 1, failureThreshold: 3, cooldownMs: 1500, idleTimeoutMs: 1500, maxRetryDelayMs: 5000 },
    });
    chat = await startChat({ PROVIDERS_FILE: file });
  });
  afterAll(async () => {
    await chat?.close();
    await sim?.close();
  });
  beforeEach(() => {
    sim.resetFaults();
  });

  async function send(model: string, content: string, headers: Record<string, string> = {}) {
    const chatId = await createChat(chat.app, user);
    const res = await chat.app.inject({
      method: 'POST',
      url: `/api/v1/chats/${chatId}/messages`,
      headers: { ...user.headers, accept: 'text/event-stream', ...headers },
      payload: { content, model },
    });
    const events = parseSse(res.body);
    const text = events.filter((e) => e.event === 'delta').map((e) => (e.data as { text: string }).text).join('');
    const end = events.at(-1) as SseEvent;
    const messageId = (events[0]!.data as { assistantMessageId: string }).assistantMessageId;
    const stored = (await chat.app.inject({ method: 'GET', url: `/api/v1/chats/${chatId}/messages/${messageId}`, headers: user.headers })).json();
    return { chatId, events, text, end, stored };
  }

  /** A non-streamed `POST /v1/chat/completions` of `content` to `model`. */
  const completion = (model: string, content: string) =>
    chat.app.inject({ method: 'POST', url: '/v1/chat/completions', headers: user.headers, payload: { model, messages: [{ role: 'user', content }] } });

  /** The outbox event about message `messageId`, once it is written. */
  async function outboxEventOf<T>(messageId: string): Promise<T> {
    const pool = chatPool();
    try {
      return await eventually(async () => {
        const { rows } = await pool.query(`select envelope from chat.outbox where envelope->'data'->>'messageId' = $1`, [messageId]);
        return rows[0]?.envelope as T | undefined;
      });
    } finally {
      await pool.end();
    }
  }

  it.each([
    ['openai/gpt-4o-mini', 'openai', '/v1/chat/completions'],
    ['anthropic/claude-haiku-4-5', 'anthropic', '/v1/messages'],
    ['gemini/gemini-2.5-flash', 'gemini', '/v1beta/models/gemini-2.5-flash:streamGenerateContent'],
    ['ollama/llama3.2', 'ollama', '/api/chat'],
    ['compat/served-model', 'compat', '/v1/chat/completions'],
  ])('%s: the reply and its usage', async (model, provider, path) => {
    const { text, end, stored, events } = await send(model, 'echo: rivers run to the sea');
    expect(text).toBe('rivers run to the sea');
    expect(end.event).toBe('done');
    const usage = events.find((e) => e.event === 'usage')!.data as { promptTokens: number; completionTokens: number };
    // The simulator counts one token per word; the compatible server sends no usage, so it is counted locally.
    expect(usage.completionTokens).toBe(provider === 'compat' ? await countTokens(text) : 5);
    expect(usage.promptTokens).toBeGreaterThan(0);
    expect(stored).toMatchObject({ status: 'completed', provider, model: `${provider}/${model.split('/')[1]}`, content: text, usage });
    const request = sim.requests().filter((r) => r.model === model.split('/')[1]).at(-1)!;
    expect(request.path.startsWith(path)).toBe(true);
    expect(request.outcome).toBe('ok');
  });

  it('honours Retry-After on a 429 before retrying the same deployment', async () => {
    sim.setFaults({ status429: true, retryAfter: 1, failTimes: 1 }, 'rate-limited');
    const started = Date.now();
    const { end, stored } = await send('openai/rate-limited', 'echo: patience');
    expect(end.event).toBe('done');
    expect(stored.content).toBe('patience');
    const attempts = sim.requests().filter((r) => r.model === 'rate-limited');
    expect(attempts.map((r) => r.status)).toEqual([429, 200]);
    expect(attempts[1]!.startedAt - attempts[0]!.endedAt!).toBeGreaterThanOrEqual(1000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
  });

  it('falls back down the alias chain on 5xx, in order, before the first token', async () => {
    sim.setFaults({ status5xx: 503 }, 'chain-a');
    sim.setFaults({ status5xx: 500 }, 'chain-b');
    const before = sim.requests().length;
    const { end, stored } = await send('chain', 'echo: third time lucky');
    expect(end.event).toBe('done');
    expect(stored).toMatchObject({ status: 'completed', provider: 'gemini', model: 'gemini/chain-c', content: 'third time lucky' });
    // One retry per deployment (maxRetries 1), then the next one.
    expect(sim.requests().slice(before).map((r) => `${r.model}:${r.status}`)).toEqual(['chain-a:503', 'chain-a:503', 'chain-b:500', 'chain-b:500', 'chain-c:200']);
  });

  it('ends a stream cut mid-reply with an error event and stores it failed with the partial text', async () => {
    sim.setFaults({ cutAfterChunks: 3 }, 'cut-model');
    const { end, stored, text, events } = await send('openai/cut-model', 'echo: one two three four five six');
    expect(text).toBe('one two three');
    expect(end).toMatchObject({ event: 'error', data: { code: 'stream_interrupted' } });
    expect((end.data as { detail: string }).detail).toBeTruthy();
    expect(events.map((e) => e.event).slice(-2)).toEqual(['usage', 'error']);
    expect(stored).toMatchObject({ status: 'failed', content: 'one two three', error: { code: 'stream_interrupted' } });
    expect(stored.usage.completionTokens).toBe(3);
  });

  it('OpenAI API: answers a non-streamed completion cut mid-reply with 502 stream_interrupted, not a 200 with part of it', async () => {
    sim.setFaults({ cutAfterChunks: 3 }, 'cut-model');
    const res = await completion('openai/cut-model', 'echo: one two three four five six');
    expect(res.statusCode).toBe(502);
    expect(res.json()).toMatchObject({ error: { type: 'server_error', code: 'stream_interrupted' } });
    expect(res.json().error.message).toMatch(/after part of the answer/);
  });

  it("OpenAI API: a provider that fails before any text is answered with OpenAI's status on both transports: 429 with Retry-After, 504 when silent", async () => {
    const ask = (model: string, stream: boolean) =>
      chat.app.inject({ method: 'POST', url: '/v1/chat/completions', headers: user.headers, payload: { model, stream, messages: [{ role: 'user', content: 'echo: hi' }] } });
    sim.setFaults({ status429: true, retryAfter: 1 }, 'limited-model');
    for (const stream of [false, true]) {
      const limited = await ask('openai/limited-model', stream);
      expect(limited.statusCode).toBe(429);
      expect(limited.headers['retry-after']).toBe('1');
      expect(limited.headers['content-type']).toContain('application/json');
      expect(limited.json()).toMatchObject({ error: { type: 'rate_limit_error', code: 'provider_rate_limited' } });
    }
    // Headers never come within the router's idle timeout (1.5 s), retry included.
    sim.setFaults({ latencyMs: 4000 }, 'silent-model');
    const silent = await ask('openai/silent-model', false);
    expect(silent.statusCode).toBe(504);
    expect(silent.json()).toMatchObject({ error: { type: 'server_error', code: 'provider_timeout' } });
  });

  it('OpenAI API: a streamed completion cut mid-answer ends with an error chunk and [DONE], never a finish_reason', async () => {
    sim.setFaults({ cutAfterChunks: 3 }, 'cut-stream-model');
    const res = await chat.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      headers: user.headers,
      payload: { model: 'openai/cut-stream-model', stream: true, messages: [{ role: 'user', content: 'echo: one two three four five six seven' }] },
    });
    expect(res.statusCode).toBe(200);
    const data = res.body.split('\n\n').filter((b) => b.startsWith('data: ')).map((b) => b.slice(6));
    expect(data.at(-1)).toBe('[DONE]');
    expect(JSON.parse(data.at(-2)!)).toMatchObject({ error: { type: 'server_error', code: 'stream_interrupted' } });
    const chunks = data.slice(0, -2).map((d) => JSON.parse(d) as { choices: Array<{ delta: { content?: string }; finish_reason: string | null }> });
    expect(chunks.map((c) => c.choices[0]!.delta.content ?? '').join('').length).toBeGreaterThan(0);
    expect(chunks.every((c) => c.choices[0]!.finish_reason === null)).toBe(true);
  });

  it('OpenAI API: refuses the parameters an answer could not honour (tools, structured output), naming each, before any provider call', async () => {
    const ask = (extra: Record<string, unknown>) =>
      chat.app.inject({ method: 'POST', url: '/v1/chat/completions', headers: user.headers, payload: { model: 'openai/refusals', messages: [{ role: 'user', content: 'echo: plain' }], ...extra } });
    const tool = { type: 'function', function: { name: 'lookup', parameters: { type: 'object', properties: {} } } };
    const refused: Array<[Record<string, unknown>, string]> = [
      [{ tools: [tool] }, 'tools'],
      [{ functions: [tool.function] }, 'functions'],
      [{ tool_choice: 'required' }, 'tool_choice'],
      [{ tool_choice: { type: 'function', function: { name: 'lookup' } } }, 'tool_choice'],
      [{ function_call: { name: 'lookup' } }, 'function_call'],
      [{ response_format: { type: 'json_object' } }, 'response_format'],
      [{ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: {} } } }, 'response_format'],
    ];
    for (const [extra, param] of refused) {
      const res = await ask({ ...extra, stream: true });
      expect(res.statusCode, JSON.stringify(extra)).toBe(400);
      expect(res.json()).toEqual({ error: { type: 'invalid_request_error', code: 'unsupported_parameter', param, message: expect.stringContaining(`\`${param}\``) } });
    }
    expect(sim.requests().filter((r) => r.model === 'refusals')).toHaveLength(0);
    // What changes nothing is taken as it is: no tools, tool_choice none or auto, plain text, sampling hints.
    const plain = await ask({ tools: [], tool_choice: 'none', function_call: 'auto', response_format: { type: 'text' }, seed: 7, presence_penalty: 0.5 });
    expect(plain.statusCode).toBe(200);
    expect(plain.json().choices[0].message.content).toBe('plain');
    // A tool's answer in the history, and an image by URL (only data: URLs are read): 400 too.
    const history = (message: Record<string, unknown>) =>
      chat.app.inject({ method: 'POST', url: '/v1/chat/completions', headers: user.headers, payload: { model: 'openai/refusals', messages: [{ role: 'user', content: 'hi' }, message] } });
    expect((await history({ role: 'tool', tool_call_id: 'call_1', content: '{"ok":true}' })).json()).toMatchObject({ error: { type: 'invalid_request_error', code: 'validation_failed' } });
    const image = await history({ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.com/cat.png' } }] });
    expect(image.statusCode).toBe(400);
    expect(image.json().error.message).toMatch(/data: URLs/);
    expect(sim.requests().filter((r) => r.model === 'refusals')).toHaveLength(1);
  });

  it('OpenAI API: a deployment model id longer than a usage event allows is settled and published, cut to 256 characters', async () => {
    // `openai/` + a 255-character model: 262 characters, over the event's 256. Building the event
    // used to throw after the answer, unhandled, and take the service down.
    const res = await completion('long', 'echo: a long name');
    expect(res.statusCode).toBe(200);
    const messageId = (res.json() as { id: string }).id.replace(/^chatcmpl-/, '');
    const event = await outboxEventOf<{ data: { model: string; usage: { completionTokens: number } } }>(messageId);
    expect(event.data.model).toBe(`openai/long-${'m'.repeat(250)}`.slice(0, 256));
    expect(event.data.usage.completionTokens).toBe(3);
  });

  it('OpenAI API: a client that leaves while its quota is being reserved gets no provider call', async () => {
    const url = chat.url || (await chat.listen());
    const leaver = testUser();
    const pool = chatPool();
    const lock = await pool.connect();
    try {
      // The user's quota row, inserted and not committed: the reservation waits on it.
      await lock.query('begin');
      await lock.query('insert into chat.quota_usage (user_id, month) values ($1, $2)', [leaver.id, `${new Date().toISOString().slice(0, 7)}-01`]);
      const client = new AbortController();
      const answered = fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { ...leaver.headers, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'openai/left-while-reserving', messages: [{ role: 'user', content: 'echo: nobody will read this' }] }),
        signal: client.signal,
      }).catch(() => undefined);
      await eventually(async () => ((await pool.query(`select 1 from pg_stat_activity where wait_event_type = 'Lock' and query like '%quota_usage%'`)).rowCount ?? 0) > 0);
      client.abort();
      await answered;
      await new Promise((r) => setTimeout(r, 200)); // the server sees the connection close
      await lock.query('rollback');
      await new Promise((r) => setTimeout(r, 500)); // the reservation is granted; a provider call would start now
      expect(sim.requests().filter((r) => r.model === 'left-while-reserving')).toHaveLength(0);
    } finally {
      lock.release();
      await pool.end();
    }
  });

  it('a reply from a deployment whose model id is longer than a usage event allows is stored whole, its event cut to 256 characters', async () => {
    const full = `openai/long-${'m'.repeat(250)}`;
    const { end, stored } = await send('long', 'echo: a long name');
    expect(end.event).toBe('done');
    expect(stored).toMatchObject({ status: 'completed', content: 'a long name', model: full });
    const event = await outboxEventOf<{ type: string; data: { model: string } }>(stored.id);
    expect(event).toMatchObject({ type: EVENTS.chatMessageCompleted.type, data: { model: full.slice(0, 256) } });
  });

  it('counts provider requests, time to first token and tokens by provider and model', async () => {
    sim.setFaults({ status5xx: 500 }, 'metered-down');
    const ok = await send('openai/metered-model', 'echo: count these five words');
    expect(ok.end.event).toBe('done');
    expect((await send('openai/metered-down', 'hi')).end.event).toBe('error');
    const metrics = (await chat.app.inject({ method: 'GET', url: '/metrics' })).body;
    // The value of the series `name` whose labels include every one of `labels` (in any order).
    const value = (name: string, labels: Record<string, string>) => {
      for (const line of metrics.split('\n')) {
        const match = /^([a-z_]+)\{([^}]*)\} (\S+)$/.exec(line);
        if (!match || match[1] !== name) continue;
        const have = new Set(match[2]!.split(','));
        if (Object.entries({ provider: 'openai', ...labels }).every(([k, v]) => have.has(`${k}="${v}"`))) return Number(match[3]);
      }
      return NaN;
    };
    expect(value('vivier_provider_requests_total', { model: 'metered-model', outcome: 'success' })).toBe(1);
    expect(value('vivier_provider_requests_total', { model: 'metered-down', outcome: 'error' })).toBeGreaterThanOrEqual(1);
    expect(value('vivier_provider_time_to_first_token_seconds_count', { model: 'metered-model' })).toBe(1);
    expect(value('vivier_provider_tokens_total', { model: 'metered-model', direction: 'output' })).toBe(ok.stored.usage.completionTokens);
    expect(value('vivier_provider_tokens_total', { model: 'metered-model', direction: 'input' })).toBe(ok.stored.usage.promptTokens);
    expect(value('vivier_provider_request_duration_seconds_count', { model: 'metered-model', outcome: 'success' })).toBe(1);
  });

  it('ends a stalled stream after the idle timeout, with the partial text stored failed', async () => {
    sim.setFaults({ stallAfterChunks: 2 }, 'stall-model');
    const started = Date.now();
    const { end, stored } = await send('openai/stall-model', 'echo: alpha beta gamma delta');
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
    expect(end).toMatchObject({ event: 'error', data: { code: 'stream_interrupted' } });
    expect(stored).toMatchObject({ status: 'failed', content: 'alpha beta' });
  });

  it('answers 502 provider_unavailable without SSE when every deployment fails before the first token', async () => {
    sim.setFaults({ status5xx: 502 }, 'down-model');
    const chatId = await createChat(chat.app, user);
    const res = await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content: 'hello', model: 'openai/down-model' } });
    expect(res.statusCode).toBe(502);
    expect(res.json()).toMatchObject({ code: 'provider_unavailable', assistantMessage: { status: 'failed', content: '', usage: null } });
  });

  it("tells users a provider refused the platform's key, without the vendor's text (which quotes part of the key)", async () => {
    const { end, stored } = await send('revoked/any-model', 'hello');
    expect(end).toMatchObject({ event: 'error', data: { code: 'provider_error' } });
    const detail = (end.data as { detail: string }).detail;
    expect(detail).toMatch(/revoked refused the platform's credentials \(HTTP 401\)/);
    expect(detail).not.toMatch(/invalid|Incorrect API key/);
    expect(JSON.stringify(stored)).not.toMatch(/invalid|Incorrect API key/);

    const res = await completion('revoked/any-model', 'hello');
    expect(res.statusCode).toBe(502);
    expect(res.json().error.message).toMatch(/credentials/);
    expect(res.body).not.toMatch(/invalid|Incorrect API key/);
  });

  it('opens the circuit after repeated failures (no request reaches the provider), then closes it after the cool-down', async () => {
    sim.setFaults({ status5xx: 503 }, 'breaker-model');
    const hits = () => sim.requests().filter((r) => r.model === 'breaker-model').length;
    // Threshold 3: two attempts per send (one retry).
    for (let i = 0; i < 2; i++) expect((await send('openai/breaker-model', 'hi')).end.event).toBe('error');
    const seen = hits();
    expect(seen).toBeGreaterThanOrEqual(3);
    const open = await send('openai/breaker-model', 'hi');
    expect(open.end).toMatchObject({ event: 'error', data: { code: 'provider_unavailable' } });
    expect((open.end.data as { detail: string }).detail).toMatch(/circuit open/);
    expect(hits()).toBe(seen);
    const metrics = (await chat.app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(metrics).toMatch(/vivier_chat_provider_circuit_open\{[^}]*deployment="breaker"[^}]*\} 1/);

    sim.resetFaults();
    await new Promise((resolve) => setTimeout(resolve, 1600));
    const recovered = await send('openai/breaker-model', 'echo: back again');
    expect(recovered.end.event).toBe('done');
    expect(recovered.text).toBe('back again');
    expect((await chat.app.inject({ method: 'GET', url: '/metrics' })).body).toMatch(/vivier_chat_provider_circuit_open\{[^}]*deployment="breaker"[^}]*\} 0/);
  });

  it('trims the history of a chat larger than the window: newest whole messages, oldest left out', async () => {
    const chatId = await createChat(chat.app, user, { systemPrompt: 'Be brief.' });
    const words = (n: number) => Array.from({ length: 12 }, (_, i) => `w${n}x${i}`).join(' ');
    for (let n = 0; n < 8; n++) {
      const res = await chat.app.inject({
        method: 'POST',
        url: `/api/v1/chats/${chatId}/messages`,
        headers: user.headers,
        payload: { content: `echo: ${words(n)}`, model: 'openai/tiny-window' },
      });
      expect(res.statusCode).toBe(201);
    }
    const body = sim.requests().filter((r) => r.model === 'tiny-window').at(-1)!.body as {
      messages: Array<{ role: string; content: string }>;
      max_completion_tokens: number;
    };
    // Window 400: half for the reply, the rest for the prompt.
    expect(body.max_completion_tokens).toBe(200);
    expect(body.messages[0]).toEqual({ role: 'system', content: 'Be brief.' });
    expect(body.messages.at(-1)).toEqual({ role: 'user', content: `echo: ${words(7)}` });
    const history = body.messages.slice(1, -1);
    expect(history.length).toBeGreaterThan(0);
    expect(history.length).toBeLessThan(14);
    // Whole messages, newest ones, in order, starting with a user message.
    expect(history[0]!.role).toBe('user');
    const firstKept = Number(/w(\d+)x0/.exec(history[0]!.content)![1]);
    expect(firstKept).toBeGreaterThan(0);
    const expected = [];
    for (let n = firstKept; n < 7; n++) expected.push({ role: 'user', content: `echo: ${words(n)}` }, { role: 'assistant', content: words(n) });
    expect(history).toEqual(expected);
  });

  it("reads a long chat's history with the chat in one round trip from its second turn, and builds the same context without that hint", async () => {
    const chatId = await createChat(chat.app, user);
    const words = (n: number) => Array.from({ length: 12 }, (_, i) => `w${n}x${i}`).join(' ');
    const turn = (app: TestChat['app'], n: number) =>
      app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content: `echo: ${words(n)}`, model: 'openai/mid-window' } });
    for (let n = 0; n < 60; n++) expect((await turn(chat.app, n)).statusCode).toBe(201);

    // Count the history reads of the next turn: this instance remembers how much the last one took.
    const names: string[] = [];
    const pool = chat.app.pg;
    const query = pool.query.bind(pool);
    pool.query = ((config: unknown, ...rest: unknown[]) => {
      if (config && typeof config === 'object' && 'name' in config) names.push(String((config as { name: string }).name));
      return (query as (...args: unknown[]) => unknown)(config, ...rest);
    }) as typeof pool.query;
    let sent;
    try {
      sent = await turn(chat.app, 60);
    } finally {
      pool.query = query;
    }
    expect(sent.statusCode).toBe(201);
    expect(names.filter((n) => n === 'chat-with-history-v4')).toHaveLength(1);
    expect(names.filter((n) => n === 'chat-history-before-v1')).toHaveLength(0);
    const body = (model: string) => sim.requests().filter((r) => r.model === model).at(-1)!.body as { messages: Array<{ role: string; content: string }> };
    const history = body('mid-window').messages.slice(0, -1);
    // More than a first read of a chat this instance does not know (48), fewer than the chat holds.
    expect(history.length).toBeGreaterThan(48);
    expect(history.length).toBeLessThan(120);
    const firstKept = Number(/w(\d+)x0/.exec(history[0]!.content)![1]);
    const expected = [];
    for (let n = firstKept; n < 60; n++) expected.push({ role: 'user', content: `echo: ${words(n)}` }, { role: 'assistant', content: words(n) });
    expect(history).toEqual(expected);

    // Another instance, with no hint, reads in several batches and must arrive at the same history.
    const other = await startChat({ PROVIDERS_FILE: chat.config.PROVIDERS_FILE! });
    try {
      const question = (sent.json() as { userMessage: { id: string } }).userMessage.id;
      const again = await other.app.inject({
        method: 'POST',
        url: `/api/v1/chats/${chatId}/messages/${question}/regenerate`,
        headers: user.headers,
        payload: { model: 'openai/mid-window' },
      });
      expect(again.statusCode).toBe(201);
      expect(body('mid-window').messages.slice(0, -1)).toEqual(history);
    } finally {
      await other.close();
    }
  }, 60_000);

  it('refuses a message that cannot fit the window with 400 context_length_exceeded', async () => {
    const chatId = await createChat(chat.app, user);
    const res = await chat.app.inject({
      method: 'POST',
      url: `/api/v1/chats/${chatId}/messages`,
      headers: user.headers,
      payload: { content: 'word '.repeat(400), model: 'openai/tiny-window' },
    });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code: 'context_length_exceeded' });
  });
});
