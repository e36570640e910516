import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Platform } from '@vivier/dev-stack/platform';

// A conversation longer than its model's window, end to end: chat reports the history a reply
// left out (chat.events), the worker asks chat what to fold (signed internal HTTP), has the model
// summarise it and publishes the summary (worker.events), chat stores it, and the next reply is
// given the summary in place of the messages it covers.
describe('conversation summaries across chat and the worker', () => {
  let platform: Platform;
  let gateway = '';

  beforeAll(async () => {
    platform = await Platform.start({
      label: 'summaries',
      brokers: 1,
      instances: { auth: 1, gateway: 1, chat: 1, admin: 1, worker: 1 },
      providers: (simUrl) => ({
        providers: { sim: { tokensPerSecond: 0, firstTokenLatencyMs: 0 }, openai: { baseUrl: `${simUrl}/v1`, apiKey: 'sk-sim' } },
        deployments: [{ id: 'small-window', provider: 'openai', model: 'small-window', contextWindow: 1000 }],
      }),
    });
    gateway = platform.url('gateway-1');
  }, 240_000);
  afterAll(async () => {
    await platform?.stop();
  });

  it('gives a long conversation the summary of what its window no longer holds', async () => {
    const registered = await fetch(`${gateway}/api/v1/auth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: `summary-${randomUUID().slice(0, 8)}@example.com`, password: 'a summaries password' }),
    });
    expect(registered.status).toBe(201);
    const headers = { authorization: `Bearer ${((await registered.json()) as { accessToken: string }).accessToken}`, 'content-type': 'application/json' };
    const created = await fetch(`${gateway}/api/v1/chats`, { method: 'POST', headers, body: JSON.stringify({ model: 'openai/small-window', systemPrompt: 'Be brief.' }) });
    expect(created.status).toBe(201);
    const chatId = ((await created.json()) as { id: string }).id;
    const words = (n: number) => Array.from({ length: 12 }, (_, i) => `w${n}x${i}`).join(' ');
    const send = async (n: number) => {
      const res = await fetch(`${gateway}/api/v1/chats/${chatId}/messages`, { method: 'POST', headers, body: JSON.stringify({ content: `echo: ${words(n)}` }) });
      expect(res.status, await res.clone().text()).toBe(201);
    };
    for (let n = 0; n < 9; n++) await send(n);

    // Each send that overflowed asked for a summary; wait for the first to be stored.
    await expect
      .poll(async () => (await platform.db.query('select 1 from chat.chat_summaries where chat_id = $1', [chatId])).rows.length, { timeout: 60_000, interval: 250 })
      .toBe(1);

    await send(9);
    const request = platform.sim.requests().filter((r) => r.model === 'small-window').at(-1)!.body as { messages: Array<{ role: string; content: string }> };
    const heading = 'Be brief.\n\nSummary of the earlier part of this conversation (those messages are not shown):\n';
    expect(request.messages[0]!.role).toBe('system');
    expect(request.messages[0]!.content.startsWith(heading)).toBe(true);
    // It is one the worker published (later ones may have arrived since), as is the one the worker keeps.
    const { rows: own } = await platform.db.query<{ summary: string }>('select summary from worker.chat_summaries where chat_id = $1', [chatId]);
    const { rows: published } = await platform.db.query<{ data: { summary: string; throughMessageId: string } }>(
      `select envelope->'data' as data from worker.outbox where envelope->>'type' = 'vivier.worker.summary.generated.v1' and envelope->>'subject' = $1 order by id`,
      [chatId],
    );
    const given = published.find((p) => p.data.summary === request.messages[0]!.content.slice(heading.length));
    expect(given).toBeDefined();
    expect(own).toHaveLength(1);
    expect(published.map((p) => p.data.summary)).toContain(own[0]!.summary);
    // After it, only messages newer than the summary's last one, opening with the user's, ending with this send.
    const { rows: covered } = await platform.db.query<{ content: string }>(
      `select content from chat.messages where chat_id = $1 and (created_at, id) <= (select created_at, id from chat.messages where id = $2) order by created_at, id`,
      [chatId, given!.data.throughMessageId],
    );
    expect(covered.length).toBeGreaterThan(1);
    const history = request.messages.slice(1);
    expect(history[0]!.role).toBe('user');
    for (const m of covered) expect(history.map((h) => h.content)).not.toContain(m.content);
    expect(history.at(-1)).toEqual({ role: 'user', content: `echo: ${words(9)}` });
  }, 180_000);
});
