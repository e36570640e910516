import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatPool, createChat, startChat, testUser, type TestChat } from './helpers';

// Chats and their messages: CRUD, cursor pages, ownership, events in the outbox, partitions.
describe('chats', () => {
  let chat: TestChat;
  let pool: pg.Pool;
  const alice = testUser();
  const bob = testUser();

  beforeAll(async () => {
    chat = await startChat();
    pool = chatPool();
  });
  afterAll(async () => {
    await chat.close();
    await pool.end();
  });

  const outboxOf = async (chatId: string) =>
    (await pool.query(`select envelope from chat.outbox where key = $1 order by id`, [chatId])).rows.map((r) => r.envelope as { type: string; data: Record<string, unknown> });

  it('creates, reads, renames, archives and deletes a chat, each change with its event', async () => {
    const created = await chat.app.inject({ method: 'POST', url: '/api/v1/chats', headers: alice.headers, payload: { title: 'Rivers', systemPrompt: 'Be brief.' } });
    expect(created.statusCode).toBe(201);
    const body = created.json();
    expect(body).toMatchObject({ title: 'Rivers', model: 'sim/fast', archived: false, systemPrompt: 'Be brief.' });
    expect(body.createdAt).toBe(body.updatedAt);

    const read = await chat.app.inject({ method: 'GET', url: `/api/v1/chats/${body.id}`, headers: alice.headers });
    expect(read.json()).toEqual(body);

    const renamed = await chat.app.inject({ method: 'PATCH', url: `/api/v1/chats/${body.id}`, headers: alice.headers, payload: { title: 'Lakes', archived: true, systemPrompt: null } });
    expect(renamed.statusCode).toBe(200);
    expect(renamed.json()).toMatchObject({ title: 'Lakes', archived: true, systemPrompt: null });

    const deleted = await chat.app.inject({ method: 'DELETE', url: `/api/v1/chats/${body.id}`, headers: alice.headers });
    expect(deleted.statusCode).toBe(204);
    expect((await chat.app.inject({ method: 'GET', url: `/api/v1/chats/${body.id}`, headers: alice.headers })).statusCode).toBe(404);

    const events = await outboxOf(body.id);
    expect(events.map((e) => e.type)).toEqual(['vivier.chat.chat.created.v1', 'vivier.chat.chat.updated.v1', 'vivier.chat.chat.deleted.v1']);
    expect(events[0]!.data).toMatchObject({ chatId: body.id, userId: alice.id, title: 'Rivers', model: 'sim/fast' });
    expect(events[1]!.data).toMatchObject({ changes: { title: 'Lakes', archived: true, systemPromptChanged: true } });
  });

  it('pages the caller\'s chats newest first, with the archived filter', async () => {
    const user = testUser();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await createChat(chat.app, user, { title: `chat ${i}` }));
    await chat.app.inject({ method: 'PATCH', url: `/api/v1/chats/${ids[1]}`, headers: user.headers, payload: { archived: true } });

    const first = await chat.app.inject({ method: 'GET', url: '/api/v1/chats?limit=2', headers: user.headers });
    expect(first.json().items.map((c: { id: string }) => c.id)).toEqual([ids[4], ids[3]]);
    const second = await chat.app.inject({ method: 'GET', url: `/api/v1/chats?limit=2&cursor=${first.json().nextCursor}`, headers: user.headers });
    expect(second.json().items.map((c: { id: string }) => c.id)).toEqual([ids[2], ids[0]]);
    expect(second.json().nextCursor).toBeNull();

    const archived = await chat.app.inject({ method: 'GET', url: '/api/v1/chats?archived=true', headers: user.headers });
    expect(archived.json()).toMatchObject({ items: [{ id: ids[1], archived: true }], nextCursor: null });
  });

  it("answers 404 for another user's chat and its messages, and 401 without a caller", async () => {
    const id = await createChat(chat.app, alice);
    for (const [method, url] of [
      ['GET', `/api/v1/chats/${id}`],
      ['PATCH', `/api/v1/chats/${id}`],
      ['DELETE', `/api/v1/chats/${id}`],
      ['GET', `/api/v1/chats/${id}/messages`],
      ['POST', `/api/v1/chats/${id}/messages`],
    ] as const) {
      const res = await chat.app.inject({ method, url, headers: bob.headers, payload: method === 'GET' || method === 'DELETE' ? undefined : method === 'POST' ? { content: 'hi' } : { title: 'mine now' } });
      expect(res.statusCode, `${method} ${url}`).toBe(404);
      expect(res.json()).toMatchObject({ code: 'not_found', status: 404 });
      expect(res.headers['content-type']).toContain('application/problem+json');
    }
    const list = await chat.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bob.headers });
    expect(list.json().items.map((c: { id: string }) => c.id)).not.toContain(id);
    expect((await chat.app.inject({ method: 'GET', url: `/api/v1/chats/${id}` })).statusCode).toBe(401);
  });

  it('validates input with problem details', async () => {
    const res = await chat.app.inject({ method: 'POST', url: '/api/v1/chats', headers: alice.headers, payload: { title: '', extra: 1 } });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code: 'validation_failed' });
    const model = await chat.app.inject({ method: 'POST', url: '/api/v1/chats', headers: alice.headers, payload: { model: 'nobody/knows' } });
    expect(model.statusCode).toBe(400);
    expect(model.json()).toMatchObject({ code: 'unknown_model' });
    const cursor = await chat.app.inject({ method: 'GET', url: '/api/v1/chats?cursor=nonsense', headers: alice.headers });
    expect(cursor.json()).toMatchObject({ code: 'validation_failed' });
  });

  it('pages messages oldest first and reads one; another user gets 404', async () => {
    const id = await createChat(chat.app, alice);
    for (const word of ['one', 'two', 'three']) {
      const res = await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${id}/messages`, headers: alice.headers, payload: { content: `echo: ${word}` } });
      expect(res.statusCode).toBe(201);
    }
    const page1 = await chat.app.inject({ method: 'GET', url: `/api/v1/chats/${id}/messages?limit=4`, headers: alice.headers });
    const items = page1.json().items as Array<{ id: string; role: string; content: string }>;
    expect(items.map((m) => [m.role, m.content])).toEqual([
      ['user', 'echo: one'],
      ['assistant', 'one'],
      ['user', 'echo: two'],
      ['assistant', 'two'],
    ]);
    const page2 = await chat.app.inject({ method: 'GET', url: `/api/v1/chats/${id}/messages?limit=4&cursor=${page1.json().nextCursor}`, headers: alice.headers });
    expect(page2.json().items.map((m: { content: string }) => m.content)).toEqual(['echo: three', 'three']);
    expect(page2.json().nextCursor).toBeNull();

    const one = await chat.app.inject({ method: 'GET', url: `/api/v1/chats/${id}/messages/${items[1]!.id}`, headers: alice.headers });
    expect(one.json()).toMatchObject({ id: items[1]!.id, role: 'assistant', status: 'completed', content: 'one', provider: 'sim', model: 'sim/fast' });
    expect(one.json().usage).toMatchObject({ promptTokens: expect.any(Number), completionTokens: 1 });
    const foreign = await chat.app.inject({ method: 'GET', url: `/api/v1/chats/${id}/messages/${items[1]!.id}`, headers: bob.headers });
    expect(foreign.statusCode).toBe(404);
    // Nor can another user follow, stop or regenerate the reply: 404, and nothing changes.
    for (const [method, suffix, payload] of [
      ['GET', '/stream', undefined],
      ['POST', '/cancel', undefined],
      ['POST', '/regenerate', {}],
    ] as const) {
      const res = await chat.app.inject({ method, url: `/api/v1/chats/${id}/messages/${items[1]!.id}${suffix}`, headers: bob.headers, payload });
      expect(res.statusCode, suffix).toBe(404);
      expect(res.json()).toMatchObject({ code: 'not_found' });
    }
    const after = await chat.app.inject({ method: 'GET', url: `/api/v1/chats/${id}/messages?limit=10`, headers: alice.headers });
    expect(after.json().items).toHaveLength(6);
  });

  it('keeps messages in monthly partitions, made ahead by ensure_message_partitions', async () => {
    const partitions = await pool.query<{ name: string; bound: string }>(
      `select c.relname as name, pg_get_expr(c.relpartbound, c.oid) as bound
       from pg_inherits i join pg_class c on c.oid = i.inhrelid
       where i.inhparent = 'chat.messages'::regclass order by c.relname`,
    );
    const now = new Date();
    const month = (offset: number) => {
      const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + offset, 1));
      return `messages_${d.getUTCFullYear()}_${String(d.getUTCMonth() + 1).padStart(2, '0')}`;
    };
    // The current month and CHAT_PARTITION_MONTHS_AHEAD (2) more.
    expect(partitions.rows.map((r) => r.name)).toEqual(expect.arrayContaining([month(0), month(1), month(2)]));
    expect(partitions.rows.find((r) => r.name === month(0))!.bound).toMatch(/^FOR VALUES FROM \('.+'\) TO \('.+'\)$/);
    expect((await pool.query(`select chat.ensure_message_partitions(2) as n`)).rows[0].n).toBe(0);
    const indexes = await pool.query(`select indexdef from pg_indexes where schemaname = 'chat' and tablename = 'messages'`);
    expect(indexes.rows.map((r) => r.indexdef).join('\n')).toMatch(/\(chat_id, created_at, id\)/);
    expect(indexes.rows.map((r) => r.indexdef).join('\n')).toMatch(/USING gin \(search\)/);
  });
});
