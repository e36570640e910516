import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatPool, createChat, eventually, parseSse, startChat, testUser, writeProvidersFile } from './helpers';

// A chat instance that stops with replies running: it lets them run for half of
// SHUTDOWN_TIMEOUT_MS, then ends those still going, each stored failed with what it had produced
// and counted, and each sender told the service stopped (503, retryable elsewhere).
describe('replies running when the service stops', () => {
  let pool: pg.Pool;
  const user = testUser();

  beforeAll(() => {
    pool = chatPool();
  });
  afterAll(async () => {
    await pool?.end();
  });

  it('ends them after half the shutdown timeout: stored failed with their text, counted, senders answered 503 service_shutdown', async () => {
    // 20 tokens/s: a 200-word reply would take ten seconds; the stop gives it one.
    const chat = await startChat({
      PROVIDERS_FILE: writeProvidersFile({ providers: { sim: { tokensPerSecond: 20, firstTokenLatencyMs: 0 } } }),
      SHUTDOWN_TIMEOUT_MS: '2000',
    });
    let closed = false;
    try {
      const content = `echo: ${Array.from({ length: 200 }, (_, i) => `w${i}`).join(' ')}`;
      const [plainChat, streamedChat] = [await createChat(chat.app, user), await createChat(chat.app, user)];
      const plain = chat.app.inject({ method: 'POST', url: `/api/v1/chats/${plainChat}/messages`, headers: user.headers, payload: { content } });
      const streamed = chat.app.inject({ method: 'POST', url: `/api/v1/chats/${streamedChat}/messages`, headers: { ...user.headers, accept: 'text/event-stream' }, payload: { content } });
      await eventually(
        async () => (await pool.query(`select 1 from chat.messages where chat_id = any($1) and role = 'assistant' and status = 'streaming'`, [[plainChat, streamedChat]])).rows.length === 2,
        10_000,
      );
      await new Promise((resolve) => setTimeout(resolve, 500)); // some ten tokens each
      const stopping = chat.app.close();
      const [answer, stream] = await Promise.all([plain, streamed]);
      await stopping;
      closed = true;

      expect(answer.statusCode).toBe(503);
      expect(answer.json()).toMatchObject({ status: 503, code: 'service_shutdown', assistantMessage: { status: 'failed' } });
      expect(parseSse(stream.body).at(-1)).toMatchObject({ event: 'error', data: { code: 'service_shutdown' } });

      const { rows } = await pool.query<{ status: string; error_code: string; content: string; completion_tokens: number; quota_reserved: number }>(
        `select status, error_code, content, completion_tokens, quota_reserved from chat.messages where chat_id = any($1) and role = 'assistant'`,
        [[plainChat, streamedChat]],
      );
      expect(rows).toHaveLength(2);
      for (const row of rows) {
        expect(row).toMatchObject({ status: 'failed', error_code: 'service_shutdown', quota_reserved: 0 });
        // What was produced before the stop is kept and counted, not the whole answer.
        expect(row.content.length).toBeGreaterThan(0);
        expect(content.length - 'echo: '.length).toBeGreaterThan(row.content.length);
        expect(row.completion_tokens).toBeGreaterThan(0);
      }
      const { rows: events } = await pool.query<{ data: { status: string; usage: { completionTokens: number } } }>(
        `select envelope->'data' as data from chat.outbox where envelope->>'type' = 'vivier.chat.message.completed.v1' and envelope->'data'->>'chatId' = any($1)`,
        [[plainChat, streamedChat]],
      );
      expect(events.map((e) => e.data.status)).toEqual(['failed', 'failed']);
      expect(events.every((e) => e.data.usage.completionTokens > 0)).toBe(true);
    } finally {
      if (!closed) await chat.close();
    }
  });
});
