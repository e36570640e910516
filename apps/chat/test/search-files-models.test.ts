import { startProviderSim, type ProviderSim } from '@vivier/provider-sim';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import pg from 'pg';
import { testAdminDatabaseUrl } from '@vivier/service-kit/testing';
import { createChat, startChat, testUser, writeProvidersFile, type TestChat, type TestUser } from './helpers';

// A 1×1 PNG.
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');

function multipart(file: { name: string; type: string; data: Buffer }, field = 'file') {
  const boundary = `----vivier${Date.now()}`;
  const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${field}"; filename="${file.name}"\r\nContent-Type: ${file.type}\r\n\r\n`);
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  return { payload: Buffer.concat([head, file.data, tail]), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

// Search over a user's messages, attachments (limits, text into the context, images to the
// provider), and the model list.
describe('search, attachments, models', () => {
  let sim: ProviderSim;
  let chat: TestChat;
  const user = testUser();

  beforeAll(async () => {
    sim = await startProviderSim({ port: 0 });
    chat = await startChat({
      PROVIDERS_FILE: writeProvidersFile({
        providers: { openai: { baseUrl: `${sim.url}/v1`, apiKey: 'sk-test' }, anthropic: { baseUrl: sim.url, apiKey: 'sk-ant' }, sim: { tokensPerSecond: 0, firstTokenLatencyMs: 0 } },
        deployments: [{ id: 'vision-a', provider: 'anthropic', model: 'vision-model' }],
        aliases: [{ alias: 'vision', deployments: ['vision-a'] }],
      }),
      CHAT_DEFAULT_MODEL: 'sim/fast',
      CHAT_UPLOAD_MAX_BYTES: '2048',
    });
  });
  afterAll(async () => {
    await chat?.close();
    await sim?.close();
  });

  const upload = (who: TestUser, file: { name: string; type: string; data: Buffer }) => {
    const body = multipart(file);
    return chat.app.inject({ method: 'POST', url: '/api/v1/files', headers: { ...who.headers, ...body.headers }, payload: body.payload });
  };
  const say = (chatId: string, content: string, extra: Record<string, unknown> = {}) =>
    chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content, ...extra } });

  it('finds the caller\'s messages, best match first, never another user\'s', async () => {
    const rivers = await createChat(chat.app, user, { title: 'Rivers' });
    const other = await createChat(chat.app, user, { title: 'Other' });
    await say(rivers, 'echo: The river flows into the sea; rivers carry water from the mountains to the sea.');
    await say(other, 'echo: A short note that mentions a river once.');
    await say(other, 'echo: Nothing about water here at all.');
    const stranger = testUser();
    const theirs = await createChat(chat.app, stranger);
    await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${theirs}/messages`, headers: stranger.headers, payload: { content: 'echo: river river river river' } });

    const res = await chat.app.inject({ method: 'GET', url: `/api/v1/chats/search?q=${encodeURIComponent('river sea')}`, headers: user.headers });
    expect(res.statusCode).toBe(200);
    const hits = res.json().items as Array<{ chatId: string; chatTitle: string; role: string; snippet: string; rank: number }>;
    // Both sides of the turn match (the reply echoes it); the stranger's chat never shows.
    expect(hits.every((h) => h.chatId === rivers)).toBe(true);
    expect(hits.map((h) => h.role).sort()).toEqual(['assistant', 'user']);
    expect(hits[0]!.snippet).toContain('**river**');
    expect(hits[0]!.chatTitle).toBe('Rivers');

    const ranked = (await chat.app.inject({ method: 'GET', url: '/api/v1/chats/search?q=river', headers: user.headers })).json().items as typeof hits;
    expect(ranked.length).toBe(4);
    expect(ranked.map((h) => h.rank)).toEqual([...ranked.map((h) => h.rank)].sort((x, y) => y - x));
    expect(ranked[0]!.chatId).toBe(rivers);
    expect(ranked.at(-1)!.chatId).toBe(other);

    const page = (await chat.app.inject({ method: 'GET', url: '/api/v1/chats/search?q=river&limit=3', headers: user.headers })).json();
    expect(page.items).toHaveLength(3);
    const next = (await chat.app.inject({ method: 'GET', url: `/api/v1/chats/search?q=river&limit=3&cursor=${page.nextCursor}`, headers: user.headers })).json();
    expect(next.items).toHaveLength(1);
    expect(next.nextCursor).toBeNull();
    expect((await chat.app.inject({ method: 'GET', url: '/api/v1/chats/search?q=', headers: user.headers })).statusCode).toBe(400);
  });

  it('stores an upload in S3 for its owner only; 413 past the size limit, 415 for other types', async () => {
    const ok = await upload(user, { name: 'notes.txt', type: 'text/plain', data: Buffer.from('The secret word is heron.') });
    expect(ok.statusCode).toBe(201);
    expect(ok.json()).toMatchObject({ name: 'notes.txt', size: 25, contentType: 'text/plain' });
    const id = ok.json().id;
    const content = await chat.app.inject({ method: 'GET', url: `/api/v1/files/${id}/content`, headers: user.headers });
    expect(content.body).toBe('The secret word is heron.');
    expect((await chat.app.inject({ method: 'GET', url: `/api/v1/files/${id}`, headers: testUser().headers })).statusCode).toBe(404);
    expect((await chat.app.inject({ method: 'GET', url: `/api/v1/files/${id}/content`, headers: testUser().headers })).statusCode).toBe(404);

    const big = await upload(user, { name: 'big.txt', type: 'text/plain', data: Buffer.alloc(4096, 'a') });
    expect(big.statusCode).toBe(413);
    expect(big.json()).toMatchObject({ code: 'payload_too_large' });
    const huge = await upload(user, { name: 'huge.txt', type: 'text/plain', data: Buffer.alloc(200_000, 'a') });
    expect(huge.statusCode).toBe(413);
    const exe = await upload(user, { name: 'tool.exe', type: 'application/x-msdownload', data: Buffer.from('MZ') });
    expect(exe.statusCode).toBe(415);
    expect(exe.json()).toMatchObject({ code: 'unsupported_media_type' });
    const fake = await upload(user, { name: 'fake.png', type: 'image/png', data: Buffer.from('not a png') });
    expect(fake.statusCode).toBe(415);
    const json = await chat.app.inject({ method: 'POST', url: '/api/v1/files', headers: user.headers, payload: { file: 'x' } });
    expect(json.statusCode).toBe(415);
    // UTF-8 with a NUL: valid UTF-8, but no text PostgreSQL stores (it was a 500, and an object left in S3).
    const nul = await upload(user, { name: 'nul.txt', type: 'text/plain', data: Buffer.from('a\u0000b') });
    expect(nul.statusCode).toBe(400);
    expect(nul.json()).toMatchObject({ code: 'invalid_text' });
  });

  it('refuses a text file that is not UTF-8 (415), and a form with two files or none (400), storing nothing', async () => {
    const owner = testUser();
    // UTF-16 with its byte order mark, as Windows tools write text.
    const utf16 = await upload(owner, { name: 'notes.txt', type: 'text/plain', data: Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('heron', 'utf16le')]) });
    expect(utf16.statusCode).toBe(415);
    expect(utf16.json()).toMatchObject({ status: 415, code: 'unsupported_media_type' });

    const boundary = `----vivier-two-${Date.now()}`;
    const part = (name: string) => `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\nContent-Type: text/plain\r\n\r\nsome text\r\n`;
    const two = await chat.app.inject({
      method: 'POST',
      url: '/api/v1/files',
      headers: { ...owner.headers, 'content-type': `multipart/form-data; boundary=${boundary}` },
      payload: `${part('a.txt')}${part('b.txt')}--${boundary}--\r\n`,
    });
    expect(two.statusCode).toBe(400);
    expect(two.json()).toMatchObject({ status: 400, code: 'validation_failed' });
    const none = await chat.app.inject({
      method: 'POST',
      url: '/api/v1/files',
      headers: { ...owner.headers, 'content-type': `multipart/form-data; boundary=${boundary}` },
      payload: `--${boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\njust a field\r\n--${boundary}--\r\n`,
    });
    expect(none.statusCode).toBe(400);
    expect(none.json()).toMatchObject({ status: 400, code: 'validation_failed' });
    const stored = await chat.app.s3.client.send(new ListObjectsV2Command({ Bucket: chat.app.s3.bucket, Prefix: `files/${owner.id}/` }));
    expect(stored.KeyCount ?? 0).toBe(0);
  });

  it('deletes the stored object of an upload whose row could not be written, so nothing is left in S3 that no one can name', async () => {
    const who = testUser();
    const tag = who.id.replaceAll('-', '');
    const objects = async () =>
      (await chat.app.s3.client.send(new ListObjectsV2Command({ Bucket: chat.app.s3.bucket, Prefix: `files/${who.id}/` }))).KeyCount ?? 0;
    // The database refuses this user's file rows (and no one else's: other files run alongside).
    const admin = new pg.Client({ connectionString: testAdminDatabaseUrl() });
    await admin.connect();
    try {
      await admin.query(`create function chat.refuse_${tag}() returns trigger language plpgsql as $$ begin raise exception 'refused by the test'; end $$`);
      await admin.query(`create trigger refuse_${tag} before insert on chat.files for each row when (new.user_id = '${who.id}') execute function chat.refuse_${tag}()`);
      const res = await upload(who, { name: 'lost.txt', type: 'text/plain', data: Buffer.from('never stored') });
      expect(res.statusCode).toBe(500);
      expect(await objects()).toBe(0);
    } finally {
      await admin.query(`drop trigger if exists refuse_${tag} on chat.files`);
      await admin.query(`drop function if exists chat.refuse_${tag}()`);
      await admin.end();
    }
    // The same upload, with the database taking it: the object is there (so the count above could see one).
    expect((await upload(who, { name: 'kept.txt', type: 'text/plain', data: Buffer.from('stored') })).statusCode).toBe(201);
    expect(await objects()).toBe(1);
  });

  it('puts a text attachment into the context and passes an image to the provider', async () => {
    const text = (await upload(user, { name: 'notes.txt', type: 'text/plain', data: Buffer.from('The secret word is heron.') })).json();
    const image = (await upload(user, { name: 'dot.png', type: 'image/png', data: PNG })).json();
    const chatId = await createChat(chat.app, user, { model: 'vision' });
    const res = await say(chatId, 'What is in these?', { attachments: [text.id, image.id] });
    expect(res.statusCode).toBe(201);
    expect(res.json().userMessage.attachments).toEqual([text.id, image.id]);
    const request = sim.requests().filter((r) => r.model === 'vision-model').at(-1)!;
    expect(request.images).toHaveLength(1);
    expect(request.images[0]).toMatchObject({ detectedType: 'image/png', declaredType: 'image/png', bytes: PNG.length, validBase64: true });
    const sent = JSON.stringify(request.body);
    expect(sent).toContain('The secret word is heron.');
    expect(sent).toContain('notes.txt');
    expect(res.json().assistantMessage.content).toMatch(/^I received 1 image/);

    // The next turn still has the text file in its history (not the image).
    await say(chatId, 'And now?');
    const next = sim.requests().filter((r) => r.model === 'vision-model').at(-1)!;
    expect(JSON.stringify(next.body)).toContain('The secret word is heron.');
    expect(next.images).toHaveLength(0);
    // Someone else's file cannot be attached.
    const foreign = (await upload(testUser(), { name: 'x.txt', type: 'text/plain', data: Buffer.from('x') })).json();
    expect((await say(chatId, 'steal', { attachments: [foreign.id] })).statusCode).toBe(404);
  });

  it('lists models and aliases from the router', async () => {
    const res = await chat.app.inject({ method: 'GET', url: '/api/v1/models', headers: user.headers });
    expect(res.statusCode).toBe(200);
    const items = res.json().items as Array<{ id: string; provider: string; contextWindow: number; type: string; default: boolean }>;
    expect(items).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ id: 'vision', type: 'alias', provider: 'anthropic', deployments: ['vision-a'] }),
        expect.objectContaining({ id: 'openai/gpt-4o-mini', provider: 'openai', contextWindow: 128000 }),
        expect.objectContaining({ id: 'sim/fast', provider: 'sim', default: true }),
      ]),
    );
    expect((await chat.app.inject({ method: 'GET', url: '/api/v1/models' })).statusCode).toBe(401);
  });

  it('lists the models an Ollama server has, and makes the first one the default of an Ollama-only deployment', async () => {
    const ollamaOnly = await startChat({ PROVIDERS_FILE: writeProvidersFile({}), OLLAMA_HOST: sim.url });
    try {
      const items = (await ollamaOnly.app.inject({ method: 'GET', url: '/api/v1/models', headers: user.headers })).json().items as Array<{ id: string; default: boolean }>;
      // The simulator's /api/tags, in its order and with Ollama's tags; no `ollama/default` made up.
      // (Providers other test files set through the admin API at the same time may be listed too.)
      const ollama = items.map((m) => m.id).filter((id) => id.startsWith('ollama/'));
      expect(ollama).toHaveLength(9);
      expect(ollama.slice(0, 2)).toEqual(['ollama/gpt-4o-mini:latest', 'ollama/gpt-4o:latest']);
      expect(ollama).toContain('ollama/llama3.2:latest');
      expect(ollama).not.toContain('ollama/default');
      // The default is the first model listed.
      expect(items.find((m) => m.default)?.id).toBe(items[0]!.id);
      expect(sim.stats().byRoute['ollama.tags']).toBeGreaterThan(0);
    } finally {
      await ollamaOnly.close();
    }
  });

  it('describes every route in its OpenAPI document', async () => {
    const doc = (await chat.app.inject({ method: 'GET', url: '/openapi.json' })).json() as { paths: Record<string, Record<string, unknown>> };
    expect(Object.keys(doc.paths).sort()).toEqual(
      [
        '/api/v1/chats',
        '/api/v1/chats/search',
        '/api/v1/chats/{id}',
        '/api/v1/chats/{id}/messages',
        '/api/v1/chats/{id}/messages/{messageId}',
        '/api/v1/chats/{id}/messages/{messageId}/cancel',
        '/api/v1/chats/{id}/messages/{messageId}/regenerate',
        '/api/v1/chats/{id}/messages/{messageId}/stream',
        '/api/v1/exports',
        '/api/v1/exports/{id}',
        '/api/v1/files',
        '/api/v1/files/{id}',
        '/api/v1/files/{id}/content',
        '/api/v1/models',
        '/v1/chat/completions',
        '/v1/models',
      ].sort(),
    );
    const send = doc.paths['/api/v1/chats/{id}/messages']!.post as { responses: Record<string, { content?: Record<string, unknown> }> };
    expect(Object.keys(send.responses['200']!.content!)).toEqual(['text/event-stream']);
    expect(send.responses['201']).toBeDefined();
    expect(send.responses['429']).toBeDefined();
  });
});
