import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EVENTS, createEvent, type AnyEvent, type ChatMessageCompletedData } from '@vivier/contracts';
import { eventProducer, eventually, PRICED_PROVIDER, startAdmin, tag, type AdminHarness } from './helpers';

// A scripted scenario produced as the other services would publish it: registrations, sign-ins,
// a failed sign-in, chats (one deleted), messages and replies (completed, cached, failed,
// cancelled) on two days, plus an event that must not count. Then the read models must say
// exactly what happened; the same events delivered again must change nothing.

const t = tag();
const P1 = PRICED_PROVIDER;
const P2 = `t${t}b`;
const D1 = '2025-03-10';
const D2 = '2025-03-11';
const u1 = randomUUID();
const u2 = randomUUID();
const u3 = randomUUID();
const [c1, c2, c3] = [randomUUID(), randomUUID(), randomUUID()];
const actor1 = { userId: u1, ip: '203.0.113.7', userAgent: 'Firefox test' };

let admin: AdminHarness;
let kafka: Awaited<ReturnType<typeof eventProducer>>;

const at = (day: string, time: string) => `${day}T${time}Z`;

function reply(over: Partial<ChatMessageCompletedData> & Pick<ChatMessageCompletedData, 'chatId' | 'userId' | 'provider' | 'model' | 'status' | 'usage' | 'latencyMs' | 'completedAt'>) {
  return createEvent(EVENTS.chatMessageCompleted, {
    messageId: randomUUID(),
    userMessageId: randomUUID(),
    cached: false,
    ...over,
  });
}

function sent(chatId: string, userId: string, createdAt: string) {
  return createEvent(EVENTS.chatMessageCreated, { chatId, userId, messageId: randomUUID(), content: 'hello', attachmentIds: [], model: `${P1}/alpha`, createdAt });
}

const registered1 = createEvent(
  EVENTS.authUserRegistered,
  { actor: { ip: '203.0.113.7', userAgent: 'Firefox test' }, userId: u1, email: `ada-${t}@${t}.example.test`, name: 'Ada Lovelace', role: 'user', method: 'password' },
  { time: at(D1, '08:00:00.000') },
);
const chat1 = createEvent(EVENTS.chatCreated, { chatId: c1, userId: u1, title: null, model: `${P1}/alpha`, createdAt: at(D1, '09:00:00.000') });
const r1 = reply({ chatId: c1, userId: u1, provider: P1, model: `${P1}/alpha`, status: 'completed', usage: { promptTokens: 100, completionTokens: 50 }, latencyMs: 800, completedAt: at(D1, '09:01:00.000') });

const scenario: AnyEvent[] = [
  registered1,
  createEvent(
    EVENTS.authUserRegistered,
    { actor: {}, userId: u2, email: `bob-${t}@${t}.example.test`, name: null, role: 'user', method: 'oidc', oidcProvider: 'google' },
    { time: at(D1, '08:05:00.000') },
  ),
  createEvent(EVENTS.authUserLoggedIn, { actor: actor1, userId: u1, sessionId: randomUUID(), method: 'password' }, { time: at(D1, '08:30:00.000') }),
  createEvent(EVENTS.authLoginFailed, { actor: { ip: '192.0.2.99', userAgent: 'curl' }, email: `ada-${t}@${t}.example.test`, userId: u1, method: 'password', reason: 'invalid_password' }, { time: at(D1, '08:20:00.000') }),
  createEvent(EVENTS.authMfaEnabled, { actor: actor1, userId: u1, method: 'totp', recoveryCodesIssued: 10 }, { time: at(D1, '08:40:00.000') }),
  chat1,
  createEvent(EVENTS.chatCreated, { chatId: c2, userId: u1, title: null, model: `${P1}/alpha`, createdAt: at(D1, '09:10:00.000') }),
  createEvent(EVENTS.chatCreated, { chatId: c3, userId: u2, title: null, model: `${P2}/gamma`, createdAt: at(D2, '10:00:00.000') }),
  createEvent(EVENTS.chatDeleted, { chatId: c2, userId: u1, deletedAt: at(D1, '09:20:00.000') }),
  sent(c1, u1, at(D1, '09:00:30.000')),
  sent(c1, u1, at(D1, '09:02:00.000')),
  sent(c2, u1, at(D1, '09:11:00.000')),
  sent(c3, u2, at(D2, '10:00:10.000')),
  r1,
  reply({ chatId: c1, userId: u1, provider: P1, model: `${P1}/alpha`, status: 'completed', cached: true, usage: { promptTokens: 100, completionTokens: 50 }, latencyMs: 5, completedAt: at(D1, '09:02:01.000') }),
  reply({ chatId: c2, userId: u1, provider: P1, model: `${P1}/beta`, status: 'failed', usage: { promptTokens: 40, completionTokens: 0 }, latencyMs: 3000, error: { code: 'provider_unavailable', detail: 'down' }, completedAt: at(D1, '09:11:30.000') }),
  reply({ chatId: c3, userId: u2, provider: P2, model: `${P2}/gamma`, status: 'completed', usage: { promptTokens: 200, completionTokens: 300 }, latencyMs: 1200, completedAt: at(D2, '10:00:12.000') }),
  reply({ chatId: c3, userId: u2, provider: P1, model: `${P1}/alpha`, status: 'cancelled', usage: { promptTokens: 10, completionTokens: 5 }, latencyMs: 400, completedAt: at(D2, '10:05:00.000') }),
  reply({ chatId: c1, userId: u1, provider: P1, model: `${P1}/alpha`, status: 'completed', usage: { promptTokens: 7, completionTokens: 3 }, latencyMs: 2500, completedAt: at(D2, '11:00:00.000') }),
  // A background reply's result: chat publishes message.completed for it; this one is not usage.
  createEvent(EVENTS.workerCompletionFinished, {
    assistantMessageId: randomUUID(),
    chatId: c1,
    userId: u1,
    userMessageId: randomUUID(),
    status: 'completed',
    content: 'not counted',
    provider: P1,
    model: `${P1}/alpha`,
    usage: { promptTokens: 1000, completionTokens: 1000 },
    latencyMs: 100,
  }),
];

// Prices (TEST_PRICES, USD per million tokens): P1/alpha listed, P1/beta by the provider wildcard, P2 unpriced.
// r1 100×1.5+50×6 = 450; cached: 0; failed beta 40×0.5 = 20; cancelled alpha 10×1.5+5×6 = 45; r6 7×1.5+3×6 = 28.5 → 29.

beforeAll(async () => {
  admin = await startAdmin({}, { consumers: true });
  kafka = await eventProducer();
  await kafka.produce(...scenario);
});

afterAll(async () => {
  await kafka?.close();
  await admin?.close();
});

async function user(id: string) {
  const res = await admin.call('GET', `/api/v1/admin/users/${id}`);
  return res.statusCode === 200 ? res.json() : undefined;
}

async function usage(query: string) {
  const res = await admin.call('GET', `/api/v1/admin/usage?${query}`);
  expect(res.statusCode, res.body).toBe(200);
  return res.json();
}

const u1Expected = { chats: 1, messages: 7, tokensIn: 247, tokensOut: 103, tokens: 350 };
const u2Expected = { chats: 1, messages: 3, tokensIn: 210, tokensOut: 305, tokens: 515 };

describe('read models from events', () => {
  it('users and per-user totals match the scenario exactly', async () => {
    const ada = await eventually(async () => {
      const [a, b] = [await user(u1), await user(u2)];
      return a?.messages === 7 && a.tokens === 350 && a.mfaEnabled && b?.messages === 3 && b.chats === 1 ? a : undefined;
    }, 45_000, 'the scenario to be applied');
    expect(ada).toMatchObject({
      id: u1,
      email: `ada-${t}@${t}.example.test`,
      name: 'Ada Lovelace',
      role: 'user',
      status: 'active',
      disabled: false,
      mfaEnabled: true,
      createdAt: at(D1, '08:00:00.000'),
      lastLoginAt: at(D1, '08:30:00.000'),
      // The last thing the user did: their last reply, on D2.
      lastActiveAt: at(D2, '11:00:00.000'),
      monthlyTokens: null,
      ...u1Expected,
    });
    expect(await user(u2)).toMatchObject({ name: null, createdAt: at(D1, '08:05:00.000'), lastLoginAt: null, lastActiveAt: at(D2, '10:05:00.000'), ...u2Expected });

    // The list: search by the run's own domain, newest first.
    const list = (await admin.call('GET', `/api/v1/admin/users?q=${t}.example`)).json();
    expect(list.items.map((u: { id: string }) => u.id)).toEqual([u2, u1]);
    expect(list.items[1]).toMatchObject(u1Expected);
  }, 60_000);

  it('usage by day, provider, model and user matches, with cost from the price table', async () => {
    await eventually(async () => (await user(u1))?.tokens === 350 && (await user(u2))?.tokens === 515, 45_000, 'the replies');
    const latency = (count: number, max: number | null) => ({ count, max });

    const byDay = await usage(`from=${D1}&to=${D2}&groupBy=day&provider=${P1}`);
    expect(byDay.source).toBe('usage_daily_model');
    expect(byDay.items).toMatchObject([
      { day: D1, messages: 3, failures: 1, cancelled: 0, cacheHits: 1, tokensIn: 240, tokensOut: 100, tokens: 340, costMicros: 470, latencyMs: latency(1, 800) },
      { day: D2, messages: 2, failures: 0, cancelled: 1, cacheHits: 0, tokensIn: 17, tokensOut: 8, tokens: 25, costMicros: 74, latencyMs: latency(1, 2500) },
    ]);
    expect(byDay.totals).toMatchObject({ messages: 5, failures: 1, cancelled: 1, cacheHits: 1, tokensIn: 257, tokensOut: 108, costMicros: 544, costUsd: 0.000544 });
    // One observation of 800 ms, in the (750, 1000] bucket: every percentile is estimated inside it.
    for (const p of ['p50', 'p95', 'p99'] as const) {
      expect(byDay.items[0].latencyMs[p]).toBeGreaterThan(750);
      expect(byDay.items[0].latencyMs[p]).toBeLessThanOrEqual(800);
    }

    const byProvider = await usage(`from=${D1}&to=${D2}&groupBy=provider`);
    // Lists come ordered by provider (then model). P1 is named after the test run and P2 after this
    // file's random tag, so either may come first: the order is checked, then P1's rows are taken
    // first whatever it is.
    const mine = <T extends { provider: string }>(items: T[]): T[] => {
      const providers = items.map((i) => i.provider).filter((p) => p === P1 || p === P2);
      expect(providers).toEqual([...providers].sort());
      return [P1, P2].flatMap((p) => items.filter((i) => i.provider === p));
    };
    expect(mine(byProvider.items)).toMatchObject([
      { provider: P1, messages: 5, tokensIn: 257, tokensOut: 108, costMicros: 544, failures: 1, cacheHits: 1, cancelled: 1 },
      { provider: P2, messages: 1, tokensIn: 200, tokensOut: 300, costMicros: 0, latencyMs: latency(1, 1200) },
    ]);

    const byModel = await usage(`from=${D1}&to=${D2}&groupBy=model`);
    expect(mine(byModel.items)).toMatchObject([
      { provider: P1, model: `${P1}/alpha`, messages: 4, tokensIn: 217, tokensOut: 108, costMicros: 524, cacheHits: 1, cancelled: 1, latencyMs: latency(2, 2500) },
      { provider: P1, model: `${P1}/beta`, messages: 1, failures: 1, tokensIn: 40, tokensOut: 0, costMicros: 20, latencyMs: latency(0, null) },
      { provider: P2, model: `${P2}/gamma`, messages: 1, tokensIn: 200, tokensOut: 300, costMicros: 0 },
    ]);

    // By user, over whole months (monthly roll-up), over days only, and over both.
    const expectUsers = (result: { items: Array<{ userId: string }> }) => {
      const items = result.items.filter((i) => i.userId === u1 || i.userId === u2);
      expect(items).toMatchObject([
        { userId: u2, email: `bob-${t}@${t}.example.test`, messages: 2, tokensIn: 210, tokensOut: 305, costMicros: 45 },
        { userId: u1, email: `ada-${t}@${t}.example.test`, name: 'Ada Lovelace', messages: 4, tokensIn: 247, tokensOut: 103, costMicros: 499, failures: 1, cacheHits: 1 },
      ]);
    };
    expectUsers(await usage('from=2025-03-01&to=2025-04-30&groupBy=user&limit=10000'));
    expectUsers(await usage(`from=${D1}&to=${D2}&groupBy=user&limit=10000`));
    expectUsers(await usage('from=2025-02-15&to=2025-03-31&groupBy=user&limit=10000'));
    expectUsers(await usage('from=2025-03-02T10:00:00Z&to=2025-05-03&groupBy=user&limit=10000'));

    // One user's usage comes from the full-grain aggregate.
    const oneUser = await usage(`from=${D1}&to=${D2}&groupBy=model&userId=${u2}`);
    expect(oneUser.source).toBe('usage_daily');
    expect(mine(oneUser.items)).toMatchObject([
      { provider: P1, model: `${P1}/alpha`, messages: 1, cancelled: 1, tokensIn: 10, tokensOut: 5, costMicros: 45 },
      { provider: P2, model: `${P2}/gamma`, messages: 1, tokensIn: 200, tokensOut: 300 },
    ]);
    expect(oneUser.totals).toMatchObject({ messages: 2, tokensIn: 210, tokensOut: 305, costMicros: 45 });
    expect((await usage(`from=${D1}&to=${D1}&groupBy=day&userId=${u2}`)).items).toEqual([]);

    // Bad ranges.
    expect((await admin.call('GET', `/api/v1/admin/usage?from=${D2}&to=${D1}`)).json()).toMatchObject({ status: 400, code: 'validation_failed' });
    expect((await admin.call('GET', '/api/v1/admin/usage?groupBy=week')).statusCode).toBe(400);
    // Year 0000 parses in JavaScript; PostgreSQL has no year 0 (it was a 500).
    expect((await admin.call('GET', '/api/v1/admin/usage?from=0000-01-01&to=0000-01-05')).json()).toMatchObject({ status: 400, code: 'validation_failed' });
    expect((await admin.call('GET', '/api/v1/admin/audit?from=0000-01-01')).json()).toMatchObject({ status: 400, code: 'validation_failed' });
    expect((await admin.call('GET', '/api/v1/admin/usage?model=%00')).json()).toMatchObject({ status: 400, code: 'invalid_text' });
  }, 60_000);

  it('adds tokens reported after their reply (message.usage_recorded) to the usage, without counting another reply', async () => {
    const P3 = `t${t}c`;
    const u4 = randomUUID();
    const c4 = randomUUID();
    const cancelled = reply({ chatId: c4, userId: u4, provider: P3, model: `${P3}/alpha`, status: 'cancelled', usage: { promptTokens: 0, completionTokens: 0 }, latencyMs: 0, completedAt: at(D1, '13:00:00.000') });
    const late = createEvent(EVENTS.chatMessageUsageRecorded, {
      chatId: c4,
      userId: u4,
      messageId: cancelled.data.messageId,
      provider: P3,
      model: `${P3}/alpha`,
      usage: { promptTokens: 30, completionTokens: 12 },
      recordedAt: at(D1, '13:00:02.000'),
    });
    await kafka.produce(
      createEvent(EVENTS.authUserRegistered, { actor: {}, userId: u4, email: `cy-${t}@${t}.example.test`, name: null, role: 'user', method: 'password' }, { time: at(D1, '12:00:00.000') }),
      cancelled,
      late,
      late, // redelivered
    );
    const totals = await eventually(async () => {
      const u = await user(u4);
      return u?.tokens === 42 ? u : undefined;
    }, 45_000, 'the late usage');
    expect(totals).toMatchObject({ messages: 1, tokensIn: 30, tokensOut: 12 });
    const byModel = await usage(`from=${D1}&to=${D1}&groupBy=model&userId=${u4}`);
    expect(byModel.items).toMatchObject([{ provider: P3, model: `${P3}/alpha`, messages: 1, cancelled: 1, tokensIn: 30, tokensOut: 12, latencyMs: { count: 0 } }]);
  }, 60_000);

  it('the same events delivered again change nothing', async () => {
    await eventually(async () => (await user(u1))?.tokens === 350, 45_000, 'the scenario');
    const before = { u1: await user(u1), usage: await usage(`from=${D1}&to=${D2}&groupBy=model&provider=${P1}`) };
    // Redeliveries (same event ids), then a new message in the same chat (same partition, so it is
    // handled after them): once it shows, the duplicates have been through.
    await kafka.produce(registered1, chat1, r1, r1, sent(c1, u1, at(D2, '12:00:00.000')));
    const after = await eventually(async () => {
      const u = await user(u1);
      return u?.messages === 8 ? u : undefined;
    }, 45_000, 'the message after the duplicates');
    expect(after).toMatchObject({ ...u1Expected, messages: 8, lastActiveAt: at(D2, '12:00:00.000') });
    expect({ ...after, messages: 7, lastActiveAt: before.u1.lastActiveAt }).toEqual(before.u1);
    expect(await usage(`from=${D1}&to=${D2}&groupBy=model&provider=${P1}`)).toEqual(before.usage);
    const { rows } = await admin.pg.query('select count(*)::int as n from admin.processed_events where consumer_group = $1 and event_id = $2', ['admin', r1.id]);
    expect(rows[0].n).toBe(1);
    // The pending contributions of each consumer transaction were folded at its commit: none is left.
    expect((await admin.pg.query('select count(*)::int as n from admin.usage_pending')).rows[0].n).toBe(0);
  }, 60_000);

  it('keeps an audit log of auth events: filters, cursor pages, NDJSON export', async () => {
    await eventually(async () => (await user(u1))?.mfaEnabled, 45_000, 'the auth events');
    const page = async (query: string) => {
      const res = await admin.call('GET', `/api/v1/admin/audit?${query}`);
      expect(res.statusCode, res.body).toBe(200);
      return res.json();
    };
    const all = await page(`userId=${u1}`);
    expect(all.items.map((e: { type: string }) => e.type)).toEqual([
      'vivier.auth.mfa.enabled.v1',
      'vivier.auth.user.logged_in.v1',
      'vivier.auth.login.failed.v1',
      'vivier.auth.user.registered.v1',
    ]);
    expect(all.nextCursor).toBeNull();
    expect(all.items[2]).toMatchObject({
      occurredAt: at(D1, '08:20:00.000'),
      actorUserId: null,
      userId: u1,
      ip: '192.0.2.99',
      userAgent: 'curl',
      details: { email: `ada-${t}@${t}.example.test`, reason: 'invalid_password', method: 'password', userId: u1 },
    });
    expect(all.items[1]).toMatchObject({ actorUserId: u1, ip: '203.0.113.7', userAgent: 'Firefox test' });
    expect(all.items[1].details).not.toHaveProperty('actor');

    expect((await page(`userId=${u1}&type=auth.login.failed`)).items).toHaveLength(1);
    expect((await page(`userId=${u1}&type=vivier.auth.login.failed.v1`)).items).toHaveLength(1);
    expect((await page(`userId=${u1}&type=auth.user`)).items.map((e: { type: string }) => e.type)).toEqual(['vivier.auth.user.logged_in.v1', 'vivier.auth.user.registered.v1']);
    expect((await page(`actorId=${u1}`)).items).toHaveLength(2);
    expect((await page(`userId=${u1}&from=${at(D1, '08:20:00.000')}&to=${at(D1, '08:40:00.000')}`)).items.map((e: { type: string }) => e.type)).toEqual([
      'vivier.auth.user.logged_in.v1',
      'vivier.auth.login.failed.v1',
    ]);
    expect((await page(`userId=${u1}&to=${D1}`)).items).toHaveLength(4);
    expect((await page(`userId=${u1}&from=${D2}`)).items).toHaveLength(0);

    // Cursor pages of one.
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const p: { items: Array<{ id: string }>; nextCursor: string | null } = await page(`userId=${u1}&limit=1${cursor ? `&cursor=${cursor}` : ''}`);
      seen.push(...p.items.map((e) => e.id));
      cursor = p.nextCursor;
    } while (cursor);
    expect(seen).toEqual(all.items.map((e: { id: string }) => e.id));
    expect((await admin.call('GET', '/api/v1/admin/audit?cursor=nonsense')).json()).toMatchObject({ status: 400, code: 'validation_failed' });
    const hyphens = Buffer.from(JSON.stringify([new Date().toISOString(), '-'.repeat(36)])).toString('base64url');
    expect((await admin.call('GET', `/api/v1/admin/audit?cursor=${hyphens}`)).json()).toMatchObject({ status: 400, code: 'validation_failed' });

    // NDJSON: the whole filtered log, across several export pages (500 rows each).
    const failures = Array.from({ length: 1201 }, (_, i) =>
      createEvent(EVENTS.authLoginFailed, { actor: { ip: '192.0.2.1' }, email: `x-${t}@example.test`, userId: u3, method: 'password', reason: 'unknown_email' }, { time: new Date(Date.UTC(2025, 2, 12, 0, 0, i)) }),
    );
    await kafka.produce(...failures);
    await eventually(async () => (await page(`userId=${u3}&type=auth.login.failed&from=2025-03-12T00:20:00Z`)).items.length === 1, 45_000, 'the failed sign-ins');
    const exported = await admin.call('GET', `/api/v1/admin/audit?userId=${u3}`, { headers: { accept: 'application/x-ndjson' } });
    expect(exported.statusCode).toBe(200);
    expect(exported.headers['content-type']).toMatch(/^application\/x-ndjson/);
    const lines = exported.body.trimEnd().split('\n').map((l) => JSON.parse(l) as { id: string; occurredAt: string });
    expect(lines).toHaveLength(1201);
    expect(new Set(lines.map((l) => l.id)).size).toBe(1201);
    expect(lines[0]!.occurredAt).toBe('2025-03-12T00:20:00.000Z');
    expect(lines[1200]!.occurredAt).toBe('2025-03-12T00:00:00.000Z');
    const viaParam = await admin.call('GET', `/api/v1/admin/audit?userId=${u1}&format=ndjson`);
    expect(viaParam.body.trimEnd().split('\n').map((l) => JSON.parse(l).id)).toEqual(all.items.map((e: { id: string }) => e.id));
  }, 60_000);
});
