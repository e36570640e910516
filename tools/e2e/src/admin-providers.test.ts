import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Platform } from '@vivier/dev-stack/platform';

// A provider configured through the admin API, end to end: gateway → admin (stored, sealed,
// provider.configured in its outbox) → Kafka → both chat instances and the worker, which serve it
// with its key without a restart; turned off the same way.
describe('providers set through the admin API', () => {
  let platform: Platform;
  let gateway = '';
  const adminEmail = `ops-${randomUUID().slice(0, 8)}@example.com`;

  beforeAll(async () => {
    platform = await Platform.start({
      label: 'admin_providers',
      brokers: 1,
      instances: { auth: 1, gateway: 1, chat: 2, admin: 1, worker: 1 },
      // The simulator listens on loopback: an admin-set URL may reach it only when allowed.
      // Chat and the worker read their stored settings every second (the restore case below).
      env: { ADMIN_EMAILS: adminEmail, PROVIDER_ALLOWED_HOSTS: '127.0.0.1', PROVIDER_SETTINGS_POLL_MS: '1000' },
    });
    gateway = platform.url('gateway-1');
  }, 240_000);
  afterAll(async () => {
    await platform?.stop();
  });

  async function register(email: string): Promise<Record<string, string>> {
    const res = await fetch(`${gateway}/api/v1/auth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: 'an admin providers password' }),
    });
    expect(res.status).toBe(201);
    const { accessToken } = (await res.json()) as { accessToken: string };
    return { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' };
  }

  /** The administrator (ADMIN_EMAILS), registered by the first test that needs one. */
  let adminHeaders: Promise<Record<string, string>> | undefined;
  const asAdmin = () => (adminHeaders ??= register(adminEmail));

  const call = async (method: string, url: string, headers: Record<string, string>, body?: unknown) => {
    const res = await fetch(`${gateway}${url}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    const text = await res.text();
    return { status: res.status, text, json: () => JSON.parse(text) as Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };

  /** True once `count` calls in a row (spread over both chat instances by the upstream proxy) agree. */
  async function listedEverywhere(user: Record<string, string>, model: string, listed: boolean, count = 6): Promise<void> {
    await expect
      .poll(
        async () => {
          for (let i = 0; i < count; i++) {
            const ids = ((await call('GET', '/api/v1/models', user)).json().items as Array<{ id: string }>).map((m) => m.id);
            if (ids.includes(model) !== listed) return false;
          }
          return true;
        },
        { timeout: 30_000, interval: 200 },
      )
      .toBe(true);
  }

  it('serves the provider on every chat instance and in the worker, with its key, then stops when it is turned off', async () => {
    const admin = await asAdmin();
    const user = await register(`user-${randomUUID().slice(0, 8)}@example.com`);
    const model = 'e2e/tuned';
    const settings = { kind: 'openai_compatible', baseUrl: `${platform.sim.url}/v1`, models: ['tuned'], routing: { maxRetries: 0 } };

    const created = await call('PUT', '/api/v1/admin/providers/e2e', admin, { ...settings, apiKey: 'sk-e2e-admin-key-0001' });
    expect(created.status, created.text).toBe(201);
    expect(created.json()).toMatchObject({ name: 'e2e', hasApiKey: true, revision: 1 });
    await listedEverywhere(user, model, true);

    // Streamed, through whichever chat instance the proxy picks, twice.
    const chat = await call('POST', '/api/v1/chats', user, { model });
    expect(chat.status, chat.text).toBe(201);
    const chatId = chat.json().id as string;
    for (const words of ['set by an admin', 'on every instance']) {
      const sse = await fetch(`${gateway}/api/v1/chats/${chatId}/messages`, {
        method: 'POST',
        headers: { ...user, accept: 'text/event-stream' },
        body: JSON.stringify({ content: `echo: ${words}` }),
      });
      const text = await sse.text();
      expect(text, text).toContain('event: done');
      expect(text).toContain(words);
    }
    // Queued: the worker answers it with the same provider.
    const queued = await call('POST', `/api/v1/chats/${chatId}/messages`, user, { content: 'echo: answered by the worker', async: true });
    expect(queued.status, queued.text).toBe(202);
    const assistantId = queued.json().assistantMessage.id as string;
    await expect
      .poll(async () => (await call('GET', `/api/v1/chats/${chatId}/messages/${assistantId}`, user)).json().status, { timeout: 60_000, interval: 250 })
      .toBe('completed');
    expect((await call('GET', `/api/v1/chats/${chatId}/messages/${assistantId}`, user)).json()).toMatchObject({
      provider: 'e2e',
      model,
      content: 'answered by the worker',
    });
    // The three replies (and the chat's title, which the worker writes with the chat's model).
    const calls = platform.sim.requests().filter((r) => r.model === 'tuned');
    const asked = (words: string) => calls.some((r) => JSON.stringify(r.body).includes(words));
    expect(['set by an admin', 'on every instance', 'answered by the worker'].filter((w) => !asked(w))).toEqual([]);
    expect(new Set(calls.map((r) => r.headers.authorization))).toEqual(new Set(['Bearer sk-e2e-admin-key-0001']));

    // Turned off: gone from the list on every instance, and refused before anything is stored.
    const off = await call('PUT', '/api/v1/admin/providers/e2e', admin, { ...settings, enabled: false });
    expect(off.status, off.text).toBe(200);
    await listedEverywhere(user, model, false);
    const refused = await call('POST', `/api/v1/chats/${chatId}/messages`, user, { content: 'echo: too late' });
    expect(refused.status, refused.text).toBe(400);
    expect(refused.json()).toMatchObject({ code: 'unknown_model' });
    expect(platform.sim.requests().some((r) => JSON.stringify(r.body).includes('too late'))).toBe(false);
  }, 180_000);

  it('gives settings lost by chat and the worker back when admin starts (republished at their revision)', async () => {
    const admin = await asAdmin();
    const user = await register(`user-${randomUUID().slice(0, 8)}@example.com`);
    const model = 'restored/kept';
    const created = await call('PUT', '/api/v1/admin/providers/restored', admin, { kind: 'openai_compatible', baseUrl: `${platform.sim.url}/v1`, models: ['kept'], apiKey: 'sk-e2e-restored-key-01' });
    expect(created.status, created.text).toBe(201);
    await listedEverywhere(user, model, true);
    const stored = async () =>
      (await platform.db.query(`select (select count(*) from chat.provider_settings where provider_id = 'restored') + (select count(*) from worker.provider_settings where provider_id = 'restored') as n`)).rows[0].n;
    await expect.poll(stored, { timeout: 30_000 }).toBe('2');
    // Both databases lose it (restored from a backup taken before it, after the event left Kafka):
    // every chat instance drops it at its next read.
    await platform.db.query(`delete from chat.provider_settings where provider_id = 'restored'`);
    await platform.db.query(`delete from worker.provider_settings where provider_id = 'restored'`);
    await listedEverywhere(user, model, false);

    await platform.restart('admin-1');
    await expect.poll(stored, { timeout: 60_000 }).toBe('2');
    await listedEverywhere(user, model, true);
    const sse = await fetch(`${gateway}/v1/chat/completions`, {
      method: 'POST',
      headers: user,
      body: JSON.stringify({ model, messages: [{ role: 'user', content: 'echo: back again' }] }),
    });
    expect(sse.status).toBe(200);
    expect(((await sse.json()) as { choices: Array<{ message: { content: string } }> }).choices[0]!.message.content).toBe('back again');
    const calls = platform.sim.requests().filter((r) => r.model === 'kept');
    expect(calls.at(-1)!.headers.authorization).toBe('Bearer sk-e2e-restored-key-01');
  }, 180_000);

  it('stops a queued reply the worker is producing within a second of its cancel, and counts what it generated', async () => {
    const user = await register(`cancel-${randomUUID().slice(0, 8)}@example.com`);
    const model = `slow-${randomUUID().slice(0, 8)}`;
    // 400 tokens at 40 a second: ten seconds of reply, unless it is stopped.
    platform.sim.setFaults({ tokensPerSecond: 40, replyTokens: 400 }, model);
    const chat = await call('POST', '/api/v1/chats', user, { model: `openai/${model}` });
    expect(chat.status, chat.text).toBe(201);
    const chatId = chat.json().id as string;
    const queued = await call('POST', `/api/v1/chats/${chatId}/messages`, user, { content: 'Tell me a long story.', async: true });
    expect(queued.status, queued.text).toBe(202);
    const assistantId = queued.json().assistantMessage.id as string;
    // The worker is producing it (chat answers nothing of it until the worker's result).
    await expect.poll(() => platform.sim.requests().some((r) => r.model === model), { timeout: 60_000, interval: 100 }).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const cancelledAt = Date.now();
    const cancel = await call('POST', `/api/v1/chats/${chatId}/messages/${assistantId}/cancel`, user, {});
    expect(cancel.status, cancel.text).toBe(202);
    expect(cancel.json()).toMatchObject({ status: 'cancelled' });
    await expect.poll(() => platform.sim.stats().aborts.some((a) => a.model === model), { timeout: 5_000, interval: 50 }).toBe(true);
    const abort = platform.sim.stats().aborts.find((a) => a.model === model)!;
    expect(abort.abortedAt - cancelledAt).toBeLessThan(1000);
    // The worker's result: the reply stays cancelled, and the tokens it used are on it (and in the month's use).
    await expect
      .poll(async () => (await call('GET', `/api/v1/chats/${chatId}/messages/${assistantId}`, user)).json().usage, { timeout: 30_000, interval: 250 })
      .not.toBeNull();
    const stored = (await call('GET', `/api/v1/chats/${chatId}/messages/${assistantId}`, user)).json();
    expect(stored).toMatchObject({ status: 'cancelled', content: '' });
    expect(stored.usage.promptTokens).toBeGreaterThan(0);
    expect(stored.usage.completionTokens).toBeGreaterThan(0);
    expect(stored.usage.completionTokens).toBeLessThan(400);
    expect(platform.sim.requests().filter((r) => r.model === model)).toHaveLength(1);
  }, 120_000);
});
