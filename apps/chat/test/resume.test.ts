import { Redis } from 'ioredis';
import pg from 'pg';
import { startProviderSim, type ProviderSim } from '@vivier/provider-sim';
import { testAdminDatabaseUrl, testEnv } from '@vivier/service-kit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newId } from '../src/ids';
import { chatPool, createChat, eventually, streamSse, startChat, testUser, writeProvidersFile, type SseEvent, type TestChat } from './helpers';

const textOf = (events: SseEvent[]) =>
  events
    .filter((e) => e.event === 'delta')
    .map((e) => (e.data as { text: string }).text)
    .join('');

const WORDS = Array.from({ length: 30 }, (_, i) => `word${i}`).join(' ');

// Replies outlive their clients: disconnects, resuming with Last-Event-ID on any instance (while
// running and after), cancel from any instance, and replies whose instance died.
describe('replies that outlive their connection', () => {
  let sim: ProviderSim;
  let a: TestChat;
  let b: TestChat;
  let pool: pg.Pool;
  let redis: Redis;
  const user = testUser();

  beforeAll(async () => {
    sim = await startProviderSim({ port: 0 });
    // 25 tokens/s: a 30-word reply takes about 1.2 s, one delta per token.
    sim.setFaults({ tokensPerSecond: 25 }, 'slow');
    const env = {
      PROVIDERS_FILE: writeProvidersFile({ providers: { openai: { baseUrl: `${sim.url}/v1`, apiKey: 'sk-test' } } }),
      CHAT_DEFAULT_MODEL: 'openai/slow',
      CHAT_SWEEP_INTERVAL_MS: '200',
      CHAT_REPLY_LEASE_MS: '1000',
    };
    [a, b] = await Promise.all([startChat(env), startChat(env)]);
    await Promise.all([a.listen(), b.listen()]);
    pool = chatPool();
    redis = new Redis(testEnv('chat').REDIS_URL!, { keyPrefix: testEnv('chat').REDIS_KEY_PREFIX });
  });
  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await sim?.close();
    await pool?.end();
    redis?.disconnect();
  });

  const stored = async (chatId: string, id: string) =>
    (await a.app.inject({ method: 'GET', url: `/api/v1/chats/${chatId}/messages/${id}`, headers: user.headers })).json();

  it('goes on when the client disconnects: the reply completes and is stored', async () => {
    const chatId = await createChat(a.app, user);
    const first = await streamSse(`${a.url}/api/v1/chats/${chatId}/messages`, { method: 'POST', headers: user.headers, body: { content: `echo: ${WORDS}` } }, (_e, all) => all.length === 3);
    expect(first.events.map((e) => e.event)).toEqual(['message', 'delta', 'delta']);
    const id = (first.events[0]!.data as { assistantMessageId: string }).assistantMessageId;
    const message = await eventually(async () => {
      const m = await stored(chatId, id);
      return m.status === 'completed' ? m : undefined;
    });
    expect(message.content).toBe(WORDS);
    const upstream = sim.requests().filter((r) => r.model === 'slow').at(-1)!;
    expect(upstream.outcome).toBe('ok');
  });

  it('resumes mid-reply on another instance with Last-Event-ID: nothing missing, nothing twice', async () => {
    const chatId = await createChat(a.app, user);
    const first = await streamSse(`${a.url}/api/v1/chats/${chatId}/messages`, { method: 'POST', headers: user.headers, body: { content: `echo: ${WORDS}` } }, (_e, all) => all.length === 4);
    const id = (first.events[0]!.data as { assistantMessageId: string }).assistantMessageId;
    const lastId = first.events.at(-1)!.id;
    expect(lastId).toBe(4);
    // Other instance, reply still running there on instance a.
    const rest = await streamSse(`${b.url}/api/v1/chats/${chatId}/messages/${id}/stream`, { headers: { ...user.headers, 'last-event-id': String(lastId) } });
    expect(rest.status).toBe(200);
    const all = [...first.events, ...rest.events];
    expect(all.map((e) => e.id)).toEqual(all.map((_, i) => i + 1));
    expect(all.at(-1)!.event).toBe('done');
    expect(textOf(all)).toBe(WORDS);
    // Several deltas came live on b (it was not all in the journal when it connected).
    expect(rest.events.filter((e) => e.event === 'delta').length).toBeGreaterThan(5);
    expect((await stored(chatId, id)).content).toBe(WORDS);
  });

  it('resumes on the same instance through the running reply itself', async () => {
    const chatId = await createChat(a.app, user);
    const first = await streamSse(`${a.url}/api/v1/chats/${chatId}/messages`, { method: 'POST', headers: user.headers, body: { content: `echo: ${WORDS}` } }, (_e, all) => all.length === 2);
    const id = (first.events[0]!.data as { assistantMessageId: string }).assistantMessageId;
    const rest = await streamSse(`${a.url}/api/v1/chats/${chatId}/messages/${id}/stream?lastEventId=2`, { headers: user.headers });
    const all = [...first.events, ...rest.events];
    expect(all.map((e) => e.id)).toEqual(all.map((_, i) => i + 1));
    expect(textOf(all)).toBe(WORDS);
  });

  it('replays a finished reply after any id from the database, with the ids it streamed with', async () => {
    const chatId = await createChat(a.app, user);
    const full = await streamSse(`${a.url}/api/v1/chats/${chatId}/messages`, { method: 'POST', headers: user.headers, body: { content: `echo: ${WORDS}` } });
    const id = (full.events[0]!.data as { assistantMessageId: string }).assistantMessageId;
    expect(full.events.at(-1)!.event).toBe('done');
    const lastDelta = full.events.filter((e) => e.event === 'delta').at(-1)!.id;

    // Finished replies are answered from the database: the journal is not needed any more.
    for (const journal of ['kept', 'gone']) {
      if (journal === 'gone') expect(await redis.del(`chat:reply:${id}:events`)).toBe(1);
      for (const after of [0, 1, 5, lastDelta - 1, lastDelta, lastDelta + 1]) {
        const replay = await streamSse(`${b.url}/api/v1/chats/${chatId}/messages/${id}/stream`, { headers: { ...user.headers, 'last-event-id': String(after) } });
        const expected = full.events.filter((e) => e.id > after);
        // The text after the id (in one delta carrying the last delta's id), the same ids for usage and the end.
        expect(replay.events.every((e) => e.id > after), `after ${after}`).toBe(true);
        expect(textOf(replay.events), `after ${after}`).toBe(textOf(expected));
        expect(replay.events.filter((e) => e.event !== 'delta'), `after ${after}`).toEqual(expected.filter((e) => e.event !== 'delta'));
        expect(replay.events.filter((e) => e.event === 'delta').map((e) => e.id)).toEqual(after < lastDelta ? [lastDelta] : []);
      }
    }
  });

  it('cancels from another instance: the provider request is aborted within a second, the reply stored cancelled', async () => {
    const chatId = await createChat(a.app, user);
    let cancelledAt = 0;
    let messageId = '';
    const cancelling = streamSse(`${a.url}/api/v1/chats/${chatId}/messages`, { method: 'POST', headers: user.headers, body: { content: `echo: ${WORDS}` } }, (event, all) => {
      if (event.event === 'message') messageId = (event.data as { assistantMessageId: string }).assistantMessageId;
      if (all.length === 4) {
        cancelledAt = Date.now();
        void b.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages/${messageId}/cancel`, headers: user.headers }).then((res) => expect(res.statusCode).toBe(202));
      }
      return false;
    });
    const { events } = await cancelling;
    const end = events.at(-1)!;
    expect(end.event).toBe('done');
    const message = (end.data as { message: { status: string; content: string; usage: { completionTokens: number } } }).message;
    expect(message.status).toBe('cancelled');
    expect(WORDS.startsWith(message.content)).toBe(true);
    expect(message.content.length).toBeLessThan(WORDS.length);
    // Usage counts only what was generated.
    expect(message.usage.completionTokens).toBeLessThan(30);
    const abort = await eventually(() => sim.stats().aborts.find((x) => x.model === 'slow' && x.abortedAt >= cancelledAt));
    expect(abort.abortedAt - cancelledAt).toBeLessThan(1000);
    expect((await stored(chatId, messageId)).status).toBe('cancelled');
    const events2 = await pool.query(`select envelope->'data' as data from chat.outbox where envelope->>'subject' = $1`, [messageId]);
    expect(events2.rows[0].data).toMatchObject({ status: 'cancelled' });
  });

  it('cancels through the flag a reconnecting subscriber cannot miss, within a lease renewal', async () => {
    const chatId = await createChat(a.app, user);
    let messageId = '';
    const running = streamSse(`${a.url}/api/v1/chats/${chatId}/messages`, { method: 'POST', headers: user.headers, body: { content: `echo: ${WORDS}` } }, (event, all) => {
      if (event.event === 'message') messageId = (event.data as { assistantMessageId: string }).assistantMessageId;
      // Only the flag, as if the pub/sub message had been lost.
      if (all.length === 3) void redis.set(`chat:reply:${messageId}:cancel`, '1', 'PX', 5000);
      return false;
    });
    const { events } = await running;
    const message = (events.at(-1)!.data as { message: { status: string; content: string } }).message;
    expect(message.status).toBe('cancelled');
    expect(message.content.length).toBeLessThan(3 * WORDS.length);
  });

  it('fails a reply whose instance died (lease expired), keeping the text its journal holds', async () => {
    const chatId = await createChat(a.app, user);
    const question = newId(Date.now() - 5000);
    const answer = newId(Date.now() - 5000);
    await pool.query(
      `insert into chat.messages (id, chat_id, user_id, role, content, status, model, created_at, completed_at)
       values ($1, $2, $3, 'user', 'echo: lost words', 'completed', 'openai/slow', $4, $4)`,
      [question.id, chatId, user.id, question.createdAt],
    );
    await pool.query(
      `insert into chat.messages (id, chat_id, user_id, role, status, reply_to, model, quota_reserved, params, created_at)
       values ($1, $2, $3, 'assistant', 'streaming', $4, 'openai/slow', 100, '{"maxTokens":90}', $5)`,
      [answer.id, chatId, user.id, question.id, answer.createdAt],
    );
    const key = `chat:reply:${answer.id}:events`;
    const envelope = (seq: number, type: string, data: unknown) => JSON.stringify({ seq, type, data, messageId: answer.id, chatId });
    await redis.xadd(key, '0-1', 'e', envelope(1, 'message', { userMessage: { id: question.id }, assistantMessageId: answer.id }));
    await redis.xadd(key, '0-2', 'e', envelope(2, 'delta', { text: 'lost' }));
    await redis.xadd(key, '0-3', 'e', envelope(3, 'delta', { text: ' words' }));

    const message = await eventually(async () => {
      const m = await stored(chatId, answer.id);
      return m.status === 'failed' ? m : undefined;
    });
    // Its usage never came: counted as for a provider that reports none (the prompt: 100 reserved less 90 asked).
    expect(message).toMatchObject({ content: 'lost words', error: { code: 'reply_lost' }, usage: { promptTokens: 10, completionTokens: 2 } });
    const replay = await streamSse(`${b.url}/api/v1/chats/${chatId}/messages/${answer.id}/stream`, { headers: { ...user.headers, 'last-event-id': '3' } });
    expect(replay.events).toMatchObject([
      { id: 4, event: 'usage', data: { promptTokens: 10, completionTokens: 2 } },
      { id: 5, event: 'error', data: { code: 'reply_lost' } },
    ]);
  });

  it('answers reply_lost when the end of a reply cannot be stored, and the sweeper ends the reply once the database takes it', async () => {
    const who = testUser();
    const tag = who.id.replaceAll('-', '');
    const chatId = await createChat(a.app, who);
    // The database refuses to end this user's replies (and no one else's: other files run alongside).
    const admin = new pg.Client({ connectionString: testAdminDatabaseUrl() });
    await admin.connect();
    let replyId: string;
    try {
      await admin.query(`create function chat.refuse_end_${tag}() returns trigger language plpgsql as $$ begin raise exception 'refused by the test'; end $$`);
      await admin.query(
        `create trigger refuse_end_${tag} before update on chat.messages for each row when (new.user_id = '${who.id}' and new.status <> 'streaming') execute function chat.refuse_end_${tag}()`,
      );
      const res = await a.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: who.headers, payload: { content: 'echo: never stored' } });
      expect(res.statusCode).toBe(500);
      expect(res.json()).toMatchObject({ status: 500, code: 'reply_lost', assistantMessage: { status: 'failed' } });
      replyId = res.json().assistantMessage.id;
      // Still streaming in the database, with no instance running it.
      expect((await pool.query('select status from chat.messages where id = $1', [replyId])).rows[0].status).toBe('streaming');
    } finally {
      await admin.query(`drop trigger if exists refuse_end_${tag} on chat.messages`);
      await admin.query(`drop function if exists chat.refuse_end_${tag}()`);
      await admin.end();
    }
    // Not stuck: the sweeper fails it from its journal once its lease has lapsed, keeping the text.
    const ended = await eventually(async () => {
      const { rows } = await pool.query<{ status: string; error_code: string; content: string; quota_reserved: number }>(
        'select status, error_code, content, quota_reserved from chat.messages where id = $1',
        [replyId],
      );
      return rows[0]!.status !== 'streaming' ? rows[0] : undefined;
    }, 15_000);
    expect(ended).toMatchObject({ status: 'failed', error_code: 'reply_lost', content: 'never stored', quota_reserved: 0 });
  });

  it('hides another user\'s reply stream and refuses to cancel it', async () => {
    const chatId = await createChat(a.app, user);
    const turn = (await a.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content: 'echo: mine' } })).json();
    const other = testUser();
    const stream = await a.app.inject({ method: 'GET', url: `/api/v1/chats/${chatId}/messages/${turn.assistantMessage.id}/stream`, headers: other.headers });
    expect(stream.statusCode).toBe(404);
    const cancel = await a.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages/${turn.assistantMessage.id}/cancel`, headers: other.headers });
    expect(cancel.statusCode).toBe(404);
  });

  it("cancels a reply known by its id alone (the gateway's WebSocket chat.cancel), from another instance; only the owner's replies", async () => {
    const chatId = await createChat(a.app, user);
    // About 3.6 s of reply at 25 tokens/s; the client leaves once it is named, the reply goes on.
    const first = await streamSse(`${a.url}/api/v1/chats/${chatId}/messages`, { method: 'POST', headers: user.headers, body: { content: `echo: ${WORDS} ${WORDS} ${WORDS}` } }, (e) => e.event === 'message');
    const { assistantMessageId: replyId, userMessage } = first.events[0]!.data as { assistantMessageId: string; userMessage: { id: string } };
    const byId = (id: string, headers: Record<string, string>) => b.app.inject({ method: 'POST', url: `/internal/v1/messages/${id}/cancel`, headers });
    // Another user's reply, a user message, an unknown id: 404, and the reply runs on.
    expect((await byId(replyId, testUser().headers)).json()).toMatchObject({ status: 404, code: 'not_found' });
    expect((await byId(userMessage.id, user.headers)).statusCode).toBe(404);
    expect((await byId(newId().id, user.headers)).statusCode).toBe(404);
    expect((await byId('not-a-uuid', user.headers)).statusCode).toBe(400);
    expect((await stored(chatId, replyId)).status).toBe('streaming');
    const cancelled = await byId(replyId, user.headers);
    expect(cancelled.statusCode).toBe(202);
    expect(cancelled.json()).toMatchObject({ id: replyId });
    const message = await eventually(async () => {
      const m = await stored(chatId, replyId);
      return m.status === 'cancelled' ? m : undefined;
    });
    expect(message.content.length).toBeLessThan(3 * WORDS.length);
  });
});
