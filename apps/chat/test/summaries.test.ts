import { startProviderSim, type ProviderSim } from '@vivier/provider-sim';
import { countTokens } from '@vivier/providers';
import { signInternalCall } from '@vivier/service-kit';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { summaryBlock } from '../src/modules/context/context.service';
import { chatPool, createChat, startChat, testUser, writeProvidersFile, type TestChat, type TestUser } from './helpers';

// A chat longer than its model's window: chat reports the history a reply left out
// (`chat.context.truncated`), tells the worker what to fold into the chat's summary, and gives
// later replies the summary in place of the messages it covers. (The worker's side is in the
// worker's tests; the summary arriving over Kafka in exports-titles.test.ts; the whole loop in e2e.)
describe('conversation summaries', () => {
  let sim: ProviderSim;
  let chat: TestChat;
  let pool: pg.Pool;
  // Window 1000: 500 for the reply, 500 for the prompt.
  const MODEL = 'openai/summary-window';

  beforeAll(async () => {
    sim = await startProviderSim({ port: 0 });
    const file = writeProvidersFile({
      providers: { openai: { baseUrl: `${sim.url}/v1`, apiKey: 'sk-test' } },
      deployments: [{ id: 'summary-window', provider: 'openai', model: 'summary-window', contextWindow: 1000 }],
    });
    chat = await startChat({ PROVIDERS_FILE: file, CHAT_DEFAULT_MODEL: MODEL });
    await chat.listen();
    pool = chatPool();
  });
  afterAll(async () => {
    await chat?.close();
    await pool?.end();
    await sim?.close();
  });

  const words = (n: number) => Array.from({ length: 12 }, (_, i) => `w${n}x${i}`).join(' ');
  type Sent = { userMessage: { id: string; createdAt: string }; assistantMessage: { id: string; createdAt: string } };

  async function send(user: TestUser, chatId: string, n: number): Promise<Sent> {
    const res = await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content: `echo: ${words(n)}` } });
    expect(res.statusCode, res.body).toBe(201);
    return res.json() as Sent;
  }

  const lastRequest = () => sim.requests().filter((r) => r.model === 'summary-window').at(-1)!.body as { messages: Array<{ role: string; content: string }> };

  async function truncations(chatId: string) {
    const { rows } = await pool.query(
      `select envelope from chat.outbox where topic = 'chat.events' and envelope->>'type' = 'vivier.chat.context.truncated.v1'
         and envelope->'data'->>'chatId' = $1 order by id`,
      [chatId],
    );
    return rows.map((r) => r.envelope as { data: Record<string, unknown> });
  }

  async function source(chatId: string, query: Record<string, string>, secret = chat.config.INTERNAL_IDENTITY_SECRET) {
    const url = `${chat.url}/internal/v1/chats/${chatId}/summary-source?${new URLSearchParams(query)}`;
    const res = await fetch(url, { headers: signInternalCall(secret) });
    return { status: res.status, body: (await res.json()) as Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any
  }

  /** A counter of the chat service's /metrics (0 before it is first counted). */
  async function counter(name: string): Promise<number> {
    const text = (await chat.app.inject({ method: 'GET', url: '/metrics' })).body;
    const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
    return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
  }

  /** A chat of `turns` echo turns, each about a hundred tokens. */
  async function longChat(user: TestUser, turns: number): Promise<{ chatId: string; sent: Sent[] }> {
    const chatId = await createChat(chat.app, user, { systemPrompt: 'Be brief.' });
    const sent: Sent[] = [];
    for (let n = 0; n < turns; n++) sent.push(await send(user, chatId, n));
    return { chatId, sent };
  }

  it('reports each send whose context left history out, with the message and the count, and none while it all fits', async () => {
    const user = testUser();
    const counted = await counter('vivier_chat_context_truncations_total');
    const { chatId, sent } = await longChat(user, 9);
    const events = await truncations(chatId);
    expect(events.length).toBeGreaterThan(0);
    expect(await counter('vivier_chat_context_truncations_total')).toBe(counted + events.length);
    // Which sends were reported: exactly those whose request did not carry the whole conversation.
    const reported = new Set(events.map((e) => e.data.messageId));
    const firstReported = sent.findIndex((s) => reported.has(s.userMessage.id));
    expect(firstReported).toBeGreaterThan(1);
    for (let n = firstReported; n < sent.length; n++) expect(reported.has(sent[n]!.userMessage.id)).toBe(true);
    expect(events.at(-1)!.data).toMatchObject({ chatId, userId: user.id, messageId: sent.at(-1)!.userMessage.id, model: MODEL });
    // The last request's history (less the system prompt and the message) is what was not left out.
    const shown = lastRequest().messages.length - 2;
    expect(events.at(-1)!.data.omittedMessages).toBe(2 * (sent.length - 1) - shown);
    // What the history could take: the prompt's 500 less the primer, the system message and the message answered, with their framing.
    const fixed = 3 + ((await countTokens('Be brief.')) + 4) + ((await countTokens(`echo: ${words(8)}`)) + 4);
    expect(events.at(-1)!.data.historyBudget).toBe(500 - fixed);
  });

  it('tells only the worker, signed, what to fold: the oldest whole turns, leaving about half the input budget verbatim', async () => {
    const user = testUser();
    const { chatId, sent } = await longChat(user, 9);
    const historyBudget = (await truncations(chatId)).at(-1)!.data.historyBudget as number;
    const keep = Math.floor(historyBudget / 2);
    const query = { userId: user.id, historyBudget: String(historyBudget), budget: '100000' };

    expect((await source(chatId, query, 'not-the-secret-of-this-deployment')).status).toBe(403);
    expect((await source(chatId, { ...query, userId: testUser().id })).status).toBe(404);
    const unpaired = await source(chatId, { ...query, afterId: sent[0]!.assistantMessage.id });
    expect(unpaired.status).toBe(400);
    expect(unpaired.body.code).toBe('validation_failed');

    const { status, body } = await source(chatId, query);
    expect(status).toBe(200);
    expect(body.summary).toBeNull();
    const all = sent.flatMap((s) => [s.userMessage.id, s.assistantMessage.id]);
    const folded = (body.messages as Array<{ id: string; role: string; content: string; createdAt: string }>).map((m) => m.id);
    // The oldest messages, in order, ending with a reply: what stays opens with a user message.
    expect(folded.length).toBeGreaterThan(0);
    expect(folded).toEqual(all.slice(0, folded.length));
    expect(body.messages.at(-1).role).toBe('assistant');
    expect(body.messages[0]).toEqual({ id: sent[0]!.userMessage.id, role: 'user', content: `echo: ${words(0)}`, createdAt: sent[0]!.userMessage.createdAt });
    // What stays verbatim (as a context counts it) fits in half the history budget, and one more turn would not have.
    const tokens = async (ids: string[]) => {
      const { rows } = await pool.query('select coalesce(sum(context_tokens + 4), 0)::int as n from chat.messages where id = any($1::uuid[])', [ids]);
      return rows[0].n as number;
    };
    const verbatim = all.slice(folded.length);
    expect(await tokens(verbatim)).toBeLessThanOrEqual(keep);
    expect(await tokens(all.slice(folded.length - 2))).toBeGreaterThan(keep);

    // Within what the summarising model can read: a budget of less than a turn still folds one
    // whole turn, each message cut to its share of the budget.
    const small = await source(chatId, { ...query, budget: '64' });
    expect(small.body.messages.map((m: { id: string }) => m.id)).toEqual(all.slice(0, 2));
    let cutTokens = 0;
    for (const m of small.body.messages as Array<{ content: string }>) {
      expect(m.content.endsWith(' […]')).toBe(true);
      cutTokens += await countTokens(m.content.slice(0, -' […]'.length));
    }
    expect(cutTokens).toBeLessThanOrEqual(64);
    // After a summary the caller wrote (chat may not hold it yet): only what follows it.
    const after = await source(chatId, { ...query, afterId: sent[0]!.assistantMessage.id, afterAt: sent[0]!.assistantMessage.createdAt });
    expect(after.body.messages.map((m: { id: string }) => m.id)).toEqual(all.slice(2, folded.length));
  });

  it("gives later replies the chat's summary in the system message, and only the history after it", async () => {
    const user = testUser();
    const { chatId, sent } = await longChat(user, 9);
    const historyBudget = String((await truncations(chatId)).at(-1)!.data.historyBudget);
    const { body } = await source(chatId, { userId: user.id, historyBudget, budget: '100000' });
    const through = body.messages.at(-1) as { id: string; createdAt: string };
    const text = 'The user counted in echoes; SUMMARY-MARKER.';
    await pool.query(
      `insert into chat.chat_summaries (chat_id, user_id, summary, tokens, through_id, through_at, model, updated_at)
       values ($1, $2, $3, $4, $5, $6, $7, now())`,
      [chatId, user.id, text, await countTokens(summaryBlock(text)), through.id, through.createdAt, MODEL],
    );
    const before = (await truncations(chatId)).length;
    const summarized = await counter('vivier_chat_summarized_contexts_total');

    const next = await send(user, chatId, 9);
    const messages = lastRequest().messages;
    expect(messages[0]).toEqual({ role: 'system', content: `Be brief.\n\n${summaryBlock(text)}` });
    const all = [...sent, next].flatMap((s) => [s.userMessage.id, s.assistantMessage.id]);
    const after = all.slice(all.indexOf(through.id) + 1, -2);
    // Everything after the summary fits again: all of it is shown, from its first user message, and nothing is reported.
    expect(messages.slice(1)).toEqual([
      ...after.map((_, i) => {
        const n = (all.indexOf(through.id) + 1 + i) >> 1;
        return i % 2 === 0 ? { role: 'user', content: `echo: ${words(n)}` } : { role: 'assistant', content: words(n) };
      }),
      { role: 'user', content: `echo: ${words(9)}` },
    ]);
    expect(await truncations(chatId)).toHaveLength(before);

    // A reply queued for the worker is given the same system message.
    const queued = await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content: `echo: ${words(10)}`, async: true } });
    expect(queued.statusCode, queued.body).toBe(202);
    const { rows: jobs } = await pool.query(`select envelope from chat.outbox where topic = 'jobs.completion' and envelope->'data'->>'chatId' = $1`, [chatId]);
    expect(jobs.map((j) => j.envelope.data.systemPrompt)).toEqual([`Be brief.\n\n${summaryBlock(text)}`]);
    expect(await counter('vivier_chat_summarized_contexts_total')).toBe(summarized + 2);

    // A regenerate of a message the summary covers is asked without it (it tells of what came after).
    const covered = sent[1]!.userMessage.id;
    const again = await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages/${covered}/regenerate`, headers: user.headers, payload: {} });
    expect(again.statusCode, again.body).toBe(201);
    const regenerated = lastRequest().messages;
    expect(regenerated[0]).toEqual({ role: 'system', content: 'Be brief.' });
    expect(regenerated.slice(1)).toEqual([
      { role: 'user', content: `echo: ${words(0)}` },
      { role: 'assistant', content: words(0) },
      { role: 'user', content: `echo: ${words(1)}` },
    ]);

    // The summary goes with its chat.
    expect((await chat.app.inject({ method: 'DELETE', url: `/api/v1/chats/${chatId}`, headers: user.headers })).statusCode).toBe(204);
    expect((await pool.query('select 1 from chat.chat_summaries where chat_id = $1', [chatId])).rows).toHaveLength(0);
  });

  it('folds attached text files with their message, and never the newest turn however long', async () => {
    const user = testUser();
    const chatId = await createChat(chat.app, user);
    const boundary = `----vivier${Date.now()}`;
    const file = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="plan.txt"\r\nContent-Type: text/plain\r\n\r\nDay one: Alfama and the tram.\r\n--${boundary}--\r\n`);
    const upload = await chat.app.inject({ method: 'POST', url: '/api/v1/files', headers: { ...user.headers, 'content-type': `multipart/form-data; boundary=${boundary}` }, payload: file });
    expect(upload.statusCode, upload.body).toBe(201);
    const first = await chat.app.inject({
      method: 'POST',
      url: `/api/v1/chats/${chatId}/messages`,
      headers: user.headers,
      payload: { content: `echo: ${words(0)}`, attachments: [upload.json().id] },
    });
    expect(first.statusCode, first.body).toBe(201);
    for (let n = 1; n < 4; n++) await send(user, chatId, n);
    // The newest turn alone is more than half of what the history can take.
    const long = await send(user, chatId, 4);
    const { body } = await source(chatId, { userId: user.id, historyBudget: '100', budget: '100000' });
    const folded = body.messages as Array<{ id: string; content: string }>;
    expect(folded[0]!.content).toBe(`echo: ${words(0)}\n\n--- Attached file: plan.txt (text/plain) ---\nDay one: Alfama and the tram.\n--- End of plan.txt ---`);
    expect(folded.map((m) => m.id)).not.toContain(long.userMessage.id);
    expect(folded.map((m) => m.id)).not.toContain(long.assistantMessage.id);
    expect(folded).toHaveLength(8);
  });

  it('reports nothing when a summary that does not fit beside the message stands for the older history', async () => {
    const user = testUser();
    const { chatId, sent } = await longChat(user, 3);
    const through = sent[0]!.assistantMessage;
    await pool.query(
      `insert into chat.chat_summaries (chat_id, user_id, summary, tokens, through_id, through_at, model, updated_at)
       values ($1, $2, 'Too long to give.', 100000, $3, $4, $5, now())`,
      [chatId, user.id, through.id, through.createdAt, MODEL],
    );
    await send(user, chatId, 3);
    const messages = lastRequest().messages;
    // Neither the summary nor what it covers; what follows it; no report of history the window lost.
    expect(messages[0]).toEqual({ role: 'system', content: 'Be brief.' });
    expect(messages.slice(1).map((m) => m.content)).toEqual([`echo: ${words(1)}`, words(1), `echo: ${words(2)}`, words(2), `echo: ${words(3)}`]);
    expect(await truncations(chatId)).toHaveLength(0);
  });
});
