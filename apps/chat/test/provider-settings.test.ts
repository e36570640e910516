import { randomUUID } from 'node:crypto';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import pg from 'pg';
import { startProviderSim, type ProviderSim } from '@vivier/provider-sim';
import { createEvent, EVENTS, toKafkaRecord, type AdminProviderConfiguredData, type AnyEvent } from '@vivier/contracts';
import { DEV_PROVIDER_KEY_ENCRYPTION_KEY, sealEventSecret } from '@vivier/providers';
import { LogCapture, testAdminDatabaseUrl } from '@vivier/service-kit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatPool, eventually, startChat, testUser, writeProvidersFile, type TestChat } from './helpers';

// `provider.configured` from admin.events, as admin publishes it, reaching chat's router at run
// time: on the instance that consumed it, and through Redis on one that did not.
describe('provider settings from the admin API', () => {
  let sim: ProviderSim;
  let consuming: TestChat;
  let other: TestChat;
  let pool: pg.Pool;
  let producer: Producer;
  // A provider id of this run only: other test files run chat apps on the same schema and topic.
  const providerId = `t${randomUUID().slice(0, 8)}`;
  const model = `${providerId}/tuned-model`;
  const user = testUser();
  const admin = { userId: randomUUID() };
  const logs = { consuming: new LogCapture(), other: new LogCapture() };

  beforeAll(async () => {
    sim = await startProviderSim({ port: 0 });
    const env = {
      PROVIDERS_FILE: writeProvidersFile({ providers: { openai: { baseUrl: `${sim.url}/v1`, apiKey: 'sk-test' } } }),
      PROVIDER_ALLOWED_HOSTS: '127.0.0.1',
      CONSUMER_SESSION_TIMEOUT_MS: '6000',
    };
    // At the most verbose level, every line kept: the admin-set key must appear in none (last test).
    [consuming, other] = await Promise.all([
      startChat({ ...env, LOG_LEVEL: 'trace' }, { consumers: true, logStream: logs.consuming }),
      startChat({ ...env, LOG_LEVEL: 'trace' }, { logStream: logs.other }),
    ]);
    pool = chatPool();
    const kafka = new Kafka({ clientId: 'chat-test', brokers: consuming.config.KAFKA_BROKERS.split(','), logLevel: logLevel.NOTHING });
    producer = kafka.producer({ allowAutoTopicCreation: false });
    await producer.connect();
  });
  afterAll(async () => {
    // The worker's consumers of other test files stored it too (the chat role cannot reach theirs).
    const admin = new pg.Client({ connectionString: testAdminDatabaseUrl() });
    await admin.connect();
    await admin.query('delete from chat.provider_settings where provider_id = $1', [providerId]);
    await admin.query('delete from worker.provider_settings where provider_id = $1', [providerId]);
    await admin.end();
    await producer?.disconnect();
    await Promise.all([consuming?.close(), other?.close()]);
    await sim?.close();
    await pool?.end();
  });

  async function configure(data: Omit<AdminProviderConfiguredData, 'actor' | 'providerId'>): Promise<string> {
    const event: AnyEvent = createEvent(EVENTS.adminProviderConfigured, { actor: admin, providerId, ...data });
    const record = toKafkaRecord(event);
    await producer.send({ topic: record.topic, acks: -1, messages: [{ key: record.key, value: record.value, headers: record.headers }] });
    await eventually(async () => (await pool.query('select 1 from chat.processed_events where event_id = $1', [event.id])).rows.length === 1, 45_000);
    return event.id;
  }

  const listed = async (chat: TestChat) =>
    ((await chat.app.inject({ method: 'GET', url: '/api/v1/models', headers: user.headers })).json() as { items: Array<{ id: string }> }).items.map((m) => m.id);

  const complete = (chat: TestChat) =>
    chat.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      headers: user.headers,
      payload: { model, messages: [{ role: 'user', content: 'echo: configured at run time' }] },
    });

  const settings = (over: Partial<Omit<AdminProviderConfiguredData, 'actor' | 'providerId'>> = {}) => ({
    kind: 'openai_compatible' as const,
    enabled: true,
    baseUrl: `${sim.url}/v1`,
    models: ['tuned-model'],
    routing: { weight: 1, timeoutMs: 30_000, maxRetries: 0, fallbacks: [] },
    apiKeyEnvelope: sealEventSecret(DEV_PROVIDER_KEY_ENCRYPTION_KEY, providerId, 'sk-set-by-admin-0001'),
    revision: 1,
    ...over,
  });

  it('serves a provider configured through admin on every instance, with its key, without a restart', async () => {
    expect(await listed(consuming)).not.toContain(model);
    expect((await complete(other)).statusCode).toBe(404);

    await configure(settings());
    // The consuming instance applies it once committed; the other one on the Redis message.
    await eventually(async () => (await listed(consuming)).includes(model), 10_000);
    await eventually(async () => (await listed(other)).includes(model), 10_000);

    for (const chat of [consuming, other]) {
      const res = await complete(chat);
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ model, choices: [{ message: { content: 'configured at run time' } }] });
    }
    const requests = sim.requests().filter((r) => r.model === 'tuned-model');
    expect(requests).toHaveLength(2);
    // The key travelled encrypted and was opened in memory; it is not stored in the clear.
    expect(requests.map((r) => r.headers.authorization)).toEqual(['Bearer sk-set-by-admin-0001', 'Bearer sk-set-by-admin-0001']);
    const { rows } = await pool.query('select api_key_envelope::text as envelope from chat.provider_settings where provider_id = $1', [providerId]);
    expect(rows[0].envelope).not.toContain('sk-set-by-admin');

    // An instance started now may name it as its default model (checked once the settings are applied)…
    const starting = await startChat({ PROVIDERS_FILE: writeProvidersFile({}), PROVIDER_ALLOWED_HOSTS: '127.0.0.1', CHAT_DEFAULT_MODEL: model });
    try {
      const items = (await starting.app.inject({ method: 'GET', url: '/api/v1/models', headers: user.headers })).json().items as Array<{ id: string; default: boolean }>;
      expect(items.find((m) => m.default)?.id).toBe(model);
    } finally {
      await starting.close();
    }
    // …and a default nothing serves still stops the start.
    await expect(startChat({ PROVIDERS_FILE: writeProvidersFile({}), CHAT_DEFAULT_MODEL: 'nowhere/at-all' })).rejects.toThrow(/CHAT_DEFAULT_MODEL "nowhere\/at-all" is not served/);
  });

  it('turns the provider off, and an older revision arriving late changes nothing', async () => {
    await configure(settings({ enabled: false, revision: 3 }));
    await eventually(async () => !(await listed(other)).includes(model), 10_000);
    expect(await listed(consuming)).not.toContain(model);
    expect((await complete(consuming)).statusCode).toBe(404);

    // Revision 2 (enabled) after revision 3: stored nothing, applied nothing.
    await configure(settings({ revision: 2 }));
    const { rows } = await pool.query('select revision, enabled from chat.provider_settings where provider_id = $1', [providerId]);
    expect(rows).toEqual([{ revision: 3, enabled: false }]);
    expect(await listed(consuming)).not.toContain(model);
  });

  it('never writes the admin-set key to its log, on either instance, whatever it did with it (QUALITY-BAR 17)', async () => {
    // A provider failure is logged (warn), with what was asked of whom; never with the key.
    sim.setFaults({ failTimes: 1, status5xx: 500 }, 'tuned-model');
    await configure(settings({ revision: 4, apiKeyEnvelope: sealEventSecret(DEV_PROVIDER_KEY_ENCRYPTION_KEY, providerId, 'sk-set-by-admin-0004') }));
    await eventually(async () => (await listed(other)).includes(model), 10_000);
    expect((await complete(other)).statusCode).toBeGreaterThanOrEqual(400);
    expect((await complete(consuming)).statusCode).toBe(200);
    sim.setFaults({}, 'tuned-model');
    for (const capture of [logs.consuming, logs.other]) {
      expect(capture.lines.length).toBeGreaterThan(5);
      expect(capture.text()).not.toContain('sk-set-by-admin');
    }
  });
});
