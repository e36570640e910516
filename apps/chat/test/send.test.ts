import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatPool, createChat, eventually, parseSse, startChat, testUser, writeProvidersFile, type TestChat } from './helpers';

// Sending a message with the built-in simulator: the SSE stream exactly as API.md describes it,
// the stored turn and its events, the non-streaming answer, validation.
describe('sending a message', () => {
  let chat: TestChat;
  let pool: pg.Pool;
  const user = testUser();

  beforeAll(async () => {
    // 500 tokens/s: a reply streams as several deltas, not one burst.
    chat = await startChat({ PROVIDERS_FILE: writeProvidersFile({ providers: { sim: { tokensPerSecond: 500, firstTokenLatencyMs: 5 } } }) });
    pool = chatPool();
  });
  afterAll(async () => {
    await chat.close();
    await pool.end();
  });

  it('streams message, deltas, usage and done with consecutive ids, and stores the turn with its events', async () => {
    const chatId = await createChat(chat.app, user, { systemPrompt: 'Answer plainly.' });
    const res = await chat.app.inject({
      method: 'POST',
      url: `/api/v1/chats/${chatId}/messages`,
      headers: { ...user.headers, accept: 'text/event-stream' },
      payload: { content: 'echo: The quick brown fox jumps over the lazy dog' },
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(res.headers['cache-control']).toContain('no-cache');
    expect(res.headers['x-request-id']).toBeTruthy();
    const events = parseSse(res.body);
    expect(events.map((e) => e.id)).toEqual(events.map((_, i) => i + 1));
    const types = events.map((e) => e.event);
    expect(types[0]).toBe('message');
    expect(types.slice(1, -2).every((t) => t === 'delta')).toBe(true);
    expect(types.length).toBeGreaterThan(4);
    expect(types.slice(-2)).toEqual(['usage', 'done']);

    const first = events[0]!.data as { userMessage: { id: string; role: string; content: string; status: string }; assistantMessageId: string };
    expect(first.userMessage).toMatchObject({ role: 'user', content: 'echo: The quick brown fox jumps over the lazy dog', status: 'completed', chatId });
    const text = events.filter((e) => e.event === 'delta').map((e) => (e.data as { text: string }).text).join('');
    expect(text).toBe('The quick brown fox jumps over the lazy dog');
    const usage = events.at(-2)!.data as { promptTokens: number; completionTokens: number };
    expect(usage.completionTokens).toBe(9);
    expect(usage.promptTokens).toBeGreaterThan(10);
    const done = events.at(-1)!.data as { message: Record<string, unknown> };
    expect(done.message).toMatchObject({
      id: first.assistantMessageId,
      role: 'assistant',
      status: 'completed',
      content: text,
      provider: 'sim',
      model: 'sim/fast',
      usage,
      cached: false,
      replyTo: first.userMessage.id,
      error: null,
    });
    expect(done.message.latencyMs).toEqual(expect.any(Number));
    expect(done.message.timeToFirstTokenMs).toEqual(expect.any(Number));

    const stored = await chat.app.inject({ method: 'GET', url: `/api/v1/chats/${chatId}/messages/${first.assistantMessageId}`, headers: user.headers });
    expect(stored.json()).toEqual(done.message);

    const outbox = await pool.query(`select envelope from chat.outbox where key = $1 order by id`, [chatId]);
    const envelopes = outbox.rows.map((r) => r.envelope as { type: string; subject: string; data: Record<string, unknown> });
    expect(envelopes.map((e) => e.type)).toEqual(['vivier.chat.chat.created.v1', 'vivier.chat.message.created.v1', 'vivier.chat.message.completed.v1']);
    expect(envelopes[1]!.data).toMatchObject({ messageId: first.userMessage.id, content: 'echo: The quick brown fox jumps over the lazy dog', model: 'sim/fast', attachmentIds: [] });
    expect(envelopes[2]!.data).toMatchObject({
      messageId: first.assistantMessageId,
      userMessageId: first.userMessage.id,
      status: 'completed',
      provider: 'sim',
      model: 'sim/fast',
      usage,
      cached: false,
    });
  });

  it('answers 201 with both messages once the reply is complete without Accept: text/event-stream', async () => {
    const chatId = await createChat(chat.app, user);
    const res = await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content: 'echo: hello there' } });
    expect(res.statusCode).toBe(201);
    expect(res.json()).toMatchObject({
      userMessage: { role: 'user', content: 'echo: hello there', status: 'completed' },
      assistantMessage: { role: 'assistant', content: 'hello there', status: 'completed', usage: { completionTokens: 2 } },
    });
  });

  it('refuses bad input before storing anything', async () => {
    const chatId = await createChat(chat.app, user);
    const post = (payload: unknown) => chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: payload as object });
    expect((await post({ content: '' })).json()).toMatchObject({ status: 400, code: 'validation_failed' });
    expect((await post({ content: 'x', surprise: true })).json()).toMatchObject({ status: 400, code: 'validation_failed' });
    expect((await post({ content: 'x', model: 'nowhere/model' })).json()).toMatchObject({ status: 400, code: 'unknown_model' });
    expect((await post({ content: 'x', attachments: ['00000000-0000-4000-8000-000000000000'] })).json()).toMatchObject({ status: 404, code: 'not_found' });
    // Half a surrogate pair: JSON can carry it, PostgreSQL cannot store it (it was a 500).
    expect((await post({ content: 'a\ud800' })).json()).toMatchObject({ status: 400, code: 'invalid_text' });
    const titled = await chat.app.inject({ method: 'POST', url: '/api/v1/chats', headers: user.headers, payload: { title: '\udc00' } });
    expect(titled.json()).toMatchObject({ status: 400, code: 'invalid_text' });
    const search = await chat.app.inject({ method: 'GET', url: '/api/v1/chats/search?q=a%00b', headers: user.headers });
    expect(search.json()).toMatchObject({ status: 400, code: 'invalid_text' });
    // A cursor deeper than any the route hands out (1,000 results).
    const deep = await chat.app.inject({ method: 'GET', url: `/api/v1/chats/search?q=river&cursor=${Buffer.from('o:999999').toString('base64url')}`, headers: user.headers });
    expect(deep.json()).toMatchObject({ status: 400, code: 'validation_failed' });
    const messages = await chat.app.inject({ method: 'GET', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers });
    expect(messages.json().items).toEqual([]);
  });

  it('a send racing the deletion of its chat is 404, never a 500', async () => {
    const outcomes = await Promise.all(
      Array.from({ length: 12 }, async () => {
        const chatId = await createChat(chat.app, user);
        const [sent, deleted] = await Promise.all([
          chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content: 'hello' } }),
          new Promise((resolve) => setTimeout(resolve, Math.random() * 6)).then(() => chat.app.inject({ method: 'DELETE', url: `/api/v1/chats/${chatId}`, headers: user.headers })),
        ]);
        expect(deleted.statusCode).toBe(204);
        return sent.statusCode;
      }),
    );
    for (const status of outcomes) expect([201, 404]).toContain(status);
  });

  it('answers a send whose chat is deleted while its reply runs with 404 chat_deleted, on either transport', async () => {
    // About 0.6 s of reply at 500 tokens/s; the chat is deleted once it streams.
    const content = `echo: ${Array.from({ length: 300 }, (_, i) => `w${i}`).join(' ')}`;
    const deleteOnceStreaming = async (chatId: string) => {
      await eventually(async () => (await pool.query(`select 1 from chat.messages where chat_id = $1 and role = 'assistant' and status = 'streaming'`, [chatId])).rows.length === 1, 10_000);
      expect((await chat.app.inject({ method: 'DELETE', url: `/api/v1/chats/${chatId}`, headers: user.headers })).statusCode).toBe(204);
    };
    const plain = await createChat(chat.app, user);
    const [sent] = await Promise.all([
      chat.app.inject({ method: 'POST', url: `/api/v1/chats/${plain}/messages`, headers: user.headers, payload: { content } }),
      deleteOnceStreaming(plain),
    ]);
    expect(sent.statusCode).toBe(404);
    expect(sent.json()).toMatchObject({ status: 404, code: 'chat_deleted' });
    const streamed = await createChat(chat.app, user);
    const [events] = await Promise.all([
      chat.app.inject({ method: 'POST', url: `/api/v1/chats/${streamed}/messages`, headers: { ...user.headers, accept: 'text/event-stream' }, payload: { content } }),
      deleteOnceStreaming(streamed),
    ]);
    expect(parseSse(events.body).at(-1)).toMatchObject({ event: 'error', data: { code: 'chat_deleted' } });
  });

  it('regenerates: a new reply to the same user message', async () => {
    const chatId = await createChat(chat.app, user);
    const turn = (await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content: 'Tell me about rivers' } })).json();
    const again = await chat.app.inject({
      method: 'POST',
      url: `/api/v1/chats/${chatId}/messages/${turn.assistantMessage.id}/regenerate`,
      headers: { ...user.headers, accept: 'text/event-stream' },
      payload: { model: 'sim/smart' },
    });
    const events = parseSse(again.body);
    const first = events[0]!.data as { userMessage: { id: string }; assistantMessageId: string };
    expect(first.userMessage.id).toBe(turn.userMessage.id);
    expect(first.assistantMessageId).not.toBe(turn.assistantMessage.id);
    expect(events.at(-1)).toMatchObject({ event: 'done', data: { message: { replyTo: turn.userMessage.id, model: 'sim/smart', status: 'completed' } } });
    const list = await chat.app.inject({ method: 'GET', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers });
    expect(list.json().items.map((m: { role: string }) => m.role)).toEqual(['user', 'assistant', 'assistant']);
    // Without a body too.
    const bare = await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages/${turn.userMessage.id}/regenerate`, headers: user.headers });
    expect(bare.statusCode).toBe(201);
    await eventually(async () => (await pool.query(`select count(*)::int as n from chat.messages where chat_id = $1`, [chatId])).rows[0].n === 4);
  });

  it('regenerates a reply with its own model, temperature and maximum when the request leaves them out', async () => {
    const chatId = await createChat(chat.app, user);
    const turn = (
      await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content: 'Name a river', model: 'sim/smart', temperature: 0.2, maxTokens: 40 } })
    ).json();
    const again = await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages/${turn.assistantMessage.id}/regenerate`, headers: user.headers });
    expect(again.statusCode).toBe(201);
    const reply = again.json().assistantMessage;
    expect(reply.model).toBe('sim/smart');
    const { rows } = await pool.query('select params, quota_reserved from chat.messages where id = $1', [reply.id]);
    expect(rows[0].params).toEqual({ temperature: 0.2, maxTokens: 40 });
    // What the request says wins.
    const other = await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages/${turn.assistantMessage.id}/regenerate`, headers: user.headers, payload: { temperature: 0.9 } });
    const { rows: otherRows } = await pool.query('select params, model from chat.messages where id = $1', [other.json().assistantMessage.id]);
    expect(otherRows[0]).toEqual({ params: { temperature: 0.9, maxTokens: 40 }, model: 'sim/smart' });
  });
});

// Over a real connection (inject has no socket): a reply that comes at once leaves in one write
// (the socket is corked for the tick), and that must never reorder or lose its last events.
describe('an instant reply over HTTP', () => {
  let chat: TestChat;
  const user = testUser();

  beforeAll(async () => {
    chat = await startChat();
    await chat.listen();
  });
  afterAll(async () => {
    await chat.close();
  });

  it('arrives whole and in order, done last, then the response ends', async () => {
    const chatId = await createChat(chat.app, user);
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${chat.url}/api/v1/chats/${chatId}/messages`, {
        method: 'POST',
        headers: { ...user.headers, accept: 'text/event-stream', 'content-type': 'application/json' },
        body: JSON.stringify({ content: `echo: number ${i}` }),
      });
      expect(res.status).toBe(200);
      const events = parseSse(await res.text());
      expect(events.map((e) => e.event)).toEqual(['message', 'delta', 'usage', 'done']);
      expect(events.map((e) => e.id)).toEqual([1, 2, 3, 4]);
    }
  });
});
