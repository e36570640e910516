import { PutObjectCommand } from '@aws-sdk/client-s3';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEvent, EVENTS, toKafkaRecord, type AnyEvent } from '@vivier/contracts';
import { signInternalCall } from '@vivier/service-kit';
import { chatPool, createChat, eventually, startChat, testUser, type TestChat } from './helpers';
import { countTokens } from '@vivier/providers';
import { newId } from '../src/ids';
import { summaryBlock } from '../src/modules/context/context.service';

// A 1×1 PNG.
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');

function multipart(file: { name: string; type: string; data: Buffer }) {
  const boundary = `----vivier${Date.now()}`;
  const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${file.name}"\r\nContent-Type: ${file.type}\r\n\r\n`);
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  return { payload: Buffer.concat([head, file.data, tail]), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

// Data exports (the request, the worker's source stream, the worker's results) and generated
// titles, with chat's consumers running against the test broker.
describe('exports and generated titles', () => {
  let chat: TestChat;
  let pool: pg.Pool;
  let producer: Producer;

  beforeAll(async () => {
    chat = await startChat({ CHAT_DEFAULT_MODEL: 'sim/fast', CONSUMER_SESSION_TIMEOUT_MS: '6000' }, { consumers: true });
    await chat.listen();
    pool = chatPool();
    const kafka = new Kafka({ clientId: 'chat-exports-test', brokers: chat.config.KAFKA_BROKERS.split(','), logLevel: logLevel.NOTHING });
    producer = kafka.producer({ allowAutoTopicCreation: false });
    await producer.connect();
  });
  afterAll(async () => {
    await producer?.disconnect();
    await chat?.close();
    await pool?.end();
  });

  async function produce(event: AnyEvent): Promise<void> {
    const record = toKafkaRecord(event);
    await producer.send({ topic: record.topic, acks: -1, messages: [{ key: record.key, value: record.value, headers: record.headers }] });
  }

  const processed = (eventId: string) => eventually(async () => (await pool.query('select 1 from chat.processed_events where event_id = $1', [eventId])).rows.length === 1, 45_000);

  it('requests an export once while it is pending, with export.requested in the outbox', async () => {
    const user = testUser();
    const first = await chat.app.inject({ method: 'POST', url: '/api/v1/exports', headers: user.headers });
    expect(first.statusCode).toBe(202);
    expect(first.json()).toMatchObject({ status: 'pending' });
    const again = await chat.app.inject({ method: 'POST', url: '/api/v1/exports', headers: user.headers });
    expect(again.statusCode).toBe(202);
    expect(again.json().id).toBe(first.json().id);
    const { rows } = await pool.query(`select envelope from chat.outbox where topic = 'jobs.export' and envelope->'data'->>'userId' = $1`, [user.id]);
    expect(rows).toHaveLength(1);
    expect(rows[0].envelope).toMatchObject({ type: 'vivier.jobs.export.requested.v1', data: { exportId: first.json().id, userId: user.id } });
    // Only its owner sees it.
    expect((await chat.app.inject({ method: 'GET', url: `/api/v1/exports/${first.json().id}`, headers: testUser().headers })).statusCode).toBe(404);
    const list = await chat.app.inject({ method: 'GET', url: '/api/v1/exports', headers: user.headers });
    expect(list.json().items.map((e: { id: string }) => e.id)).toEqual([first.json().id]);
    expect(list.json().nextCursor).toBeNull();
  });

  it('pages the list of exports by cursor, newest first, as every list is', async () => {
    const user = testUser();
    const ids = [newId(Date.now() - 3000), newId(Date.now() - 2000), newId(Date.now() - 1000)];
    for (const { id, createdAt } of ids) {
      await pool.query(`insert into chat.exports (id, user_id, status, failure_reason, created_at, updated_at) values ($1, $2, 'failed', 'x', $3, $3)`, [id, user.id, createdAt]);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const res = await chat.app.inject({ method: 'GET', url: `/api/v1/exports?limit=2${cursor ? `&cursor=${cursor}` : ''}`, headers: user.headers });
      const page: { items: Array<{ id: string }>; nextCursor: string | null } = res.json();
      seen.push(...page.items.map((e) => e.id));
      cursor = page.nextCursor;
    } while (cursor && seen.length < 10);
    expect(seen).toEqual(ids.map((i) => i.id).reverse());
    expect((await chat.app.inject({ method: 'GET', url: '/api/v1/exports?cursor=nonsense', headers: user.headers })).json()).toMatchObject({ status: 400, code: 'validation_failed' });
  });

  it("streams a user's chats, messages and files to a signed internal caller only", async () => {
    const user = testUser();
    const other = testUser();
    const chatId = await createChat(chat.app, user, { title: 'Mine' });
    await createChat(chat.app, other, { title: 'Not mine' });
    const sent = await chat.app.inject({ method: 'POST', url: `/api/v1/chats/${chatId}/messages`, headers: user.headers, payload: { content: 'echo: hello export' } });
    expect(sent.statusCode).toBe(201);
    for (const file of [
      { name: 'notes.txt', type: 'text/plain', data: Buffer.from('some notes') },
      { name: 'dot.png', type: 'image/png', data: PNG },
    ]) {
      const body = multipart(file);
      const up = await chat.app.inject({ method: 'POST', url: '/api/v1/files', headers: { ...user.headers, ...body.headers }, payload: body.payload });
      expect(up.statusCode).toBe(201);
    }

    // The chat's summary (the worker's, stored as chat stores it) is the user's data too.
    const question = (sent.json() as { userMessage: { id: string; createdAt: string } }).userMessage;
    await pool.query(
      `insert into chat.chat_summaries (chat_id, user_id, summary, tokens, through_id, through_at, model, updated_at) values ($1, $2, 'They said hello.', 9, $3, $4, 'sim/fast', now())`,
      [chatId, user.id, question.id, question.createdAt],
    );

    const url = `${chat.url}/internal/v1/users/${user.id}/export`;
    expect((await fetch(url)).status).toBe(403);
    expect((await fetch(url, { headers: signInternalCall('not-the-secret-of-this-deployment') })).status).toBe(403);
    const response = await fetch(url, { headers: signInternalCall(chat.config.INTERNAL_IDENTITY_SECRET) });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('application/x-ndjson');
    const lines = (await response.text()).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l.type)).toEqual(['chat', 'message', 'message', 'file', 'file']);
    expect(lines[0]).toMatchObject({ id: chatId, title: 'Mine', summary: { text: 'They said hello.', throughMessageId: question.id } });
    expect(lines[1]).toMatchObject({ chatId, role: 'user', content: 'echo: hello export' });
    expect(lines[2]).toMatchObject({ chatId, role: 'assistant', content: 'hello export', status: 'completed' });
    expect(lines[3]).toMatchObject({ name: 'notes.txt', text: 'some notes' });
    expect(lines[4]).toMatchObject({ name: 'dot.png', contentType: 'image/png' });
    expect(Buffer.from(lines[4]!.contentBase64 as string, 'base64').equals(PNG)).toBe(true);
  });

  it("applies the worker's result once: ready with a working presigned URL, failed with its reason", async () => {
    // The test plays the worker: while it runs, a transaction of its own holds an id open, so no
    // relay publishes the export jobs it requests (every relay publishes only rows of transactions
    // older than the oldest one open), and a worker of another test file cannot answer them first.
    const holder = await pool.connect();
    await holder.query('begin');
    await holder.query('select pg_current_xact_id()');
    try {
      await exportResults();
    } finally {
      await holder.query('rollback').catch(() => undefined);
      holder.release();
    }
  }, 120_000);

  async function exportResults(): Promise<void> {
    const user = testUser();
    const ready = (await chat.app.inject({ method: 'POST', url: '/api/v1/exports', headers: user.headers })).json();
    const objectKey = `exports/${user.id}/${ready.id}.ndjson`;
    const bundle = '{"type":"export"}\n{"type":"summary","chats":0}\n';
    await chat.app.s3.client.send(new PutObjectCommand({ Bucket: chat.app.s3.bucket, Key: objectKey, Body: bundle, ContentType: 'application/x-ndjson' }));
    const expiresAt = new Date(Date.now() + 7 * 24 * 3600 * 1000).toISOString();
    const event = createEvent(EVENTS.workerExportReady, { exportId: ready.id, userId: user.id, objectKey, sizeBytes: bundle.length, expiresAt });
    await produce(event);
    await processed(event.id);
    const view = (await chat.app.inject({ method: 'GET', url: `/api/v1/exports/${ready.id}`, headers: user.headers })).json();
    expect(view).toMatchObject({ id: ready.id, status: 'ready', sizeBytes: bundle.length, expiresAt });
    expect(Date.parse(view.urlExpiresAt) - Date.now()).toBeLessThanOrEqual(900_000);
    const download = await fetch(view.url);
    expect(download.status).toBe(200);
    expect(await download.text()).toBe(bundle);
    // A SigV4 presigned URL (s3rver does not check signatures; S3 and MinIO do), short-lived.
    const signed = new URL(view.url);
    expect(signed.searchParams.get('X-Amz-Algorithm')).toBe('AWS4-HMAC-SHA256');
    expect(signed.searchParams.get('X-Amz-Signature')).toMatch(/^[0-9a-f]{64}$/);
    expect(Number(signed.searchParams.get('X-Amz-Expires'))).toBe(900);

    // A failure after the export was ready (a stray redelivery with a new id) changes nothing.
    const late = createEvent(EVENTS.workerExportFailed, { exportId: ready.id, userId: user.id, reason: 'late' });
    await produce(late);
    await processed(late.id);
    expect((await chat.app.inject({ method: 'GET', url: `/api/v1/exports/${ready.id}`, headers: user.headers })).json().status).toBe('ready');

    // A new request after the ready one is a new export; it fails.
    const failing = (await chat.app.inject({ method: 'POST', url: '/api/v1/exports', headers: user.headers })).json();
    expect(failing.id).not.toBe(ready.id);
    const failed = createEvent(EVENTS.workerExportFailed, { exportId: failing.id, userId: user.id, reason: 'The export could not be written; please try again.' });
    await produce(failed);
    await processed(failed.id);
    expect((await chat.app.inject({ method: 'GET', url: `/api/v1/exports/${failing.id}`, headers: user.headers })).json()).toEqual({
      id: failing.id,
      status: 'failed',
      createdAt: failing.createdAt,
      error: 'The export could not be written; please try again.',
    });
  }

  it('applies a generated title to an untitled chat only', async () => {
    const user = testUser();
    const untitled = await createChat(chat.app, user);
    const titled = await createChat(chat.app, user);
    await chat.app.inject({ method: 'PATCH', url: `/api/v1/chats/${titled}`, headers: user.headers, payload: { title: 'My own title' } });
    const events = [
      createEvent(EVENTS.workerTitleGenerated, { chatId: untitled, userId: user.id, title: 'Generated one' }),
      createEvent(EVENTS.workerTitleGenerated, { chatId: titled, userId: user.id, title: 'Generated two' }),
    ];
    for (const event of events) await produce(event);
    for (const event of events) await processed(event.id);
    const title = async (id: string) => (await chat.app.inject({ method: 'GET', url: `/api/v1/chats/${id}`, headers: user.headers })).json().title;
    expect(await title(untitled)).toBe('Generated one');
    expect(await title(titled)).toBe('My own title');
  }, 120_000);

  it("keeps the newest summary of a chat, counted once, and none for another user's chat or a gone one", async () => {
    const user = testUser();
    const chatId = await createChat(chat.app, user);
    const gone = await createChat(chat.app, user);
    await chat.app.inject({ method: 'DELETE', url: `/api/v1/chats/${gone}`, headers: user.headers });
    const at = (ms: number) => new Date(Date.parse('2026-01-01T00:00:00.000Z') + ms).toISOString();
    const summary = (data: { chatId: string; userId: string; summary: string; through: number }) =>
      createEvent(EVENTS.workerSummaryGenerated, {
        chatId: data.chatId,
        userId: data.userId,
        summary: data.summary,
        throughMessageId: newId(Date.parse(at(data.through))).id,
        throughCreatedAt: at(data.through),
        model: 'sim/fast',
      });
    const newer = summary({ chatId, userId: user.id, summary: 'Through the second turn.', through: 2000 });
    // An older one after it (a retried event): it does not replace the newer.
    const older = summary({ chatId, userId: user.id, summary: 'Through the first turn.', through: 1000 });
    const stranger = summary({ chatId, userId: testUser().id, summary: 'Not their chat.', through: 3000 });
    const deleted = summary({ chatId: gone, userId: user.id, summary: 'A deleted chat.', through: 3000 });
    for (const event of [newer, older, stranger, deleted]) await produce(event);
    for (const event of [newer, older, stranger, deleted]) await processed(event.id);
    const { rows } = await pool.query('select chat_id, summary, tokens, through_id, through_at from chat.chat_summaries where chat_id = any($1::uuid[])', [[chatId, gone]]);
    expect(rows).toEqual([
      {
        chat_id: chatId,
        summary: 'Through the second turn.',
        tokens: await countTokens(summaryBlock('Through the second turn.')),
        through_id: newer.data.throughMessageId,
        through_at: new Date(at(2000)),
      },
    ]);
  }, 120_000);
});
