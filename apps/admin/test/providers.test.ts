import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LogCapture } from '@vivier/service-kit/testing';
import { EVENTS, parseEvent, type EncryptedSecret } from '@vivier/contracts';
import { openEventSecret } from '@vivier/providers';
import { ProviderKeyVault } from '../src/modules/providers/provider-keys.service';
import { sealedKeyOf, type ProviderRow } from '../src/modules/providers/providers.repository';
import { outboxEvents, startAdmin, tag, type AdminHarness } from './helpers';

const MASTER = randomBytes(32).toString('base64');
// A key with recognisable bytes, long enough to have a hint.
const API_KEY = `sk-test-${randomBytes(24).toString('hex')}`;

let admin: AdminHarness;
const logs = new LogCapture();
const t = tag();

beforeAll(async () => {
  admin = await startAdmin(
    { PROVIDER_KEY_ENCRYPTION_KEY: MASTER, LOG_LEVEL: 'trace' },
    // Names resolve through a pinned table: no DNS in tests.
    { logStream: logs, resolveHost: async (host) => [{ address: host === 'intranet.test' ? '10.20.30.40' : '8.8.8.8' }] },
  );
});
afterAll(async () => {
  await admin?.close();
});

const put = (name: string, body: unknown, harness: AdminHarness = admin) => harness.call('PUT', `/api/v1/admin/providers/${name}`, { body });

async function row(name: string): Promise<ProviderRow> {
  const { rows } = await admin.pg.query(
    `select id, kind, enabled, base_url as "baseUrl", models, routing, api_key_ciphertext as "apiKeyCiphertext", api_key_iv as "apiKeyIv",
            api_key_tag as "apiKeyTag", data_key_wrapped as "dataKeyWrapped", data_key_iv as "dataKeyIv", data_key_tag as "dataKeyTag",
            kek_id as "kekId", api_key_hint as "apiKeyHint", revision from admin.providers where id = $1`,
    [name],
  );
  return rows[0] as ProviderRow;
}

/** Every `provider.configured` of the provider, republished ones included (any admin that starts republishes). */
async function allConfiguredEvents(name: string) {
  return (await outboxEvents(admin.pg, name)).filter((e) => e.type === EVENTS.adminProviderConfigured.type);
}

/** The event of each change: the first of each revision. */
async function configuredEvents(name: string) {
  const seen = new Set<number>();
  return (await allConfiguredEvents(name)).filter((e) => {
    const revision = (e.data as { revision: number }).revision;
    if (seen.has(revision)) return false;
    seen.add(revision);
    return true;
  });
}

describe('provider settings and write-only API keys', () => {
  it('round trip: the key is never returned, logged or published in clear; the column is ciphertext; the master key opens it', async () => {
    const name = `openai-${t}`;
    const created = await put(name, {
      kind: 'openai',
      models: ['gpt-4o-mini', 'gpt-4.1'],
      routing: { weight: 10, fallbacks: ['anthropic'] },
      apiKey: API_KEY,
    });
    expect(created.statusCode, created.body).toBe(201);
    const view = created.json();
    expect(view).toMatchObject({
      name,
      kind: 'openai',
      enabled: true,
      baseUrl: null,
      models: ['gpt-4o-mini', 'gpt-4.1'],
      routing: { weight: 10, timeoutMs: 60_000, maxRetries: 2, fallbacks: ['anthropic'] },
      hasApiKey: true,
      apiKeyLast4: API_KEY.slice(-4),
      revision: 1,
      updatedBy: admin.admin.sub,
    });
    const one = await admin.call('GET', `/api/v1/admin/providers/${name}`);
    const list = await admin.call('GET', '/api/v1/admin/providers');
    for (const res of [created, one, list]) {
      expect(res.body).not.toContain(API_KEY);
      expect(res.body).not.toContain(API_KEY.slice(0, 20));
    }
    expect(list.json().items.find((p: { name: string }) => p.name === name)).toEqual(one.json());

    // The database holds ciphertext: no column has the key, or its base64.
    const stored = await row(name);
    const rowText = JSON.stringify(stored);
    const keyBytes = Buffer.from(API_KEY, 'utf8');
    expect(rowText).not.toContain(API_KEY);
    expect(rowText).not.toContain(keyBytes.toString('base64'));
    expect(stored.apiKeyCiphertext!.length).toBe(keyBytes.length);
    expect(stored.apiKeyCiphertext!.equals(keyBytes)).toBe(false);
    expect(stored.apiKeyCiphertext!.includes(keyBytes.subarray(0, 8))).toBe(false);
    expect(stored.dataKeyWrapped!.length).toBe(32);
    // The master key (and only with this provider id) opens it.
    const vault = new ProviderKeyVault(MASTER);
    expect(stored.kekId).toBe(vault.keyId);
    expect(vault.open(name, sealedKeyOf(stored)!)).toBe(API_KEY);
    expect(() => vault.open('anthropic', sealedKeyOf(stored)!)).toThrow();
    expect(() => new ProviderKeyVault(randomBytes(32).toString('base64')).open(name, { ...sealedKeyOf(stored)!, kekId: vault.keyId })).toThrow();
    const flipped = Buffer.from(stored.apiKeyCiphertext!);
    flipped[0] = flipped[0]! ^ 1;
    expect(() => vault.open(name, { ...sealedKeyOf(stored)!, apiKeyCiphertext: flipped })).toThrow();

    // The event: the full settings and only the encrypted envelope, bound to the provider id.
    const [event] = await configuredEvents(name);
    expect(event!.raw).not.toContain(API_KEY);
    expect(event!.raw).not.toContain(keyBytes.toString('base64'));
    const parsed = parseEvent(JSON.parse(event!.raw));
    expect(parsed.type).toBe(EVENTS.adminProviderConfigured.type);
    const data = event!.data as { apiKeyEnvelope: EncryptedSecret; revision: number };
    expect(data).toMatchObject({ providerId: name, kind: 'openai', enabled: true, baseUrl: null, models: ['gpt-4o-mini', 'gpt-4.1'], revision: 1 });
    expect(data.apiKeyEnvelope).toMatchObject({ algorithm: 'aes-256-gcm', keyId: vault.keyId });
    expect(openEventSecret(MASTER, name, data.apiKeyEnvelope)).toBe(API_KEY);
    expect(() => openEventSecret(MASTER, 'anthropic', data.apiKeyEnvelope)).toThrow();
    expect(() => openEventSecret(MASTER, name, { ...data.apiKeyEnvelope, tag: Buffer.alloc(16).toString('base64') })).toThrow();

    // The audit log says a key was set, nothing more.
    const audit = (await admin.call('GET', `/api/v1/admin/audit?type=admin.provider.configured&actorId=${admin.admin.sub}`)).json();
    expect(audit.items[0].details).toMatchObject({ providerId: name, apiKeySet: true });
    expect(JSON.stringify(audit)).not.toContain(data.apiKeyEnvelope.ciphertext);

    // Nothing the service logged (trace level, request bodies included if any) has the key.
    expect(logs.lines.length).toBeGreaterThan(0);
    expect(logs.text()).not.toContain(API_KEY);
    expect(logs.text()).not.toContain(API_KEY.slice(-12));
  });

  it('a PUT without apiKey keeps the key (re-published under a fresh IV), null removes it', async () => {
    const name = `anthropic-${t}`;
    expect((await put(name, { kind: 'anthropic', apiKey: API_KEY })).statusCode).toBe(201);
    const kept = await put(name, { kind: 'anthropic', enabled: false, models: ['claude-haiku-4-5'] });
    expect(kept.statusCode).toBe(200);
    expect(kept.json()).toMatchObject({ enabled: false, hasApiKey: true, revision: 2, models: ['claude-haiku-4-5'] });
    const removed = await put(name, { kind: 'anthropic', apiKey: null });
    expect(removed.json()).toMatchObject({ hasApiKey: false, apiKeyLast4: null, revision: 3, enabled: true, models: [] });
    expect((await row(name)).apiKeyCiphertext).toBeNull();

    const events = await configuredEvents(name);
    const envelopes = events.map((e) => (e.data as { apiKeyEnvelope: EncryptedSecret | null }).apiKeyEnvelope);
    expect(envelopes[0]!.iv).not.toBe(envelopes[1]!.iv);
    expect(openEventSecret(MASTER, name, envelopes[1]!)).toBe(API_KEY);
    expect(envelopes[2]).toBeNull();
    expect(events.map((e) => (e.data as { revision: number }).revision)).toEqual([1, 2, 3]);

    // A short key gets no hint.
    expect((await put(name, { kind: 'anthropic', apiKey: 'short-key' })).json()).toMatchObject({ hasApiKey: true, apiKeyLast4: null });
  });

  it('does not send a stored key to a new address or kind: the change needs the key again', async () => {
    const name = `moving-${t}`;
    expect((await put(name, { kind: 'openai', apiKey: API_KEY })).statusCode).toBe(201);
    for (const body of [
      { kind: 'openai_compatible', baseUrl: 'https://collector.example/v1' },
      { kind: 'openai', baseUrl: 'https://collector.example/v1' },
      { kind: 'anthropic' },
    ]) {
      const moved = await put(name, body);
      expect(moved.statusCode, JSON.stringify(body)).toBe(409);
      expect(moved.json()).toMatchObject({ code: 'api_key_required' });
    }
    expect((await row(name)).revision).toBe(1);
    // Sent again, the key goes with the change; after that, saves without it keep it.
    expect((await put(name, { kind: 'openai_compatible', baseUrl: 'https://collector.example/v1', apiKey: API_KEY })).json()).toMatchObject({ revision: 2, hasApiKey: true });
    expect((await put(name, { kind: 'openai_compatible', baseUrl: 'https://collector.example/v1', enabled: false })).json()).toMatchObject({ revision: 3, hasApiKey: true });
    // Removing the key needs no key.
    expect((await put(name, { kind: 'openai', apiKey: null })).json()).toMatchObject({ revision: 4, hasApiKey: false });
    // Without a stored key there is nothing to carry.
    expect((await put(name, { kind: 'anthropic' })).statusCode).toBe(200);
  });

  it('two first saves of one name at once are revisions 1 and 2, in that order everywhere', async () => {
    for (let i = 0; i < 4; i++) {
      const name = `race-${i}-${t}`;
      const [a, b] = await Promise.all([
        put(name, { kind: 'openai_compatible', baseUrl: 'https://a.example/v1', apiKey: 'key-a' }),
        put(name, { kind: 'openai_compatible', baseUrl: 'https://b.example/v1', apiKey: 'key-b' }),
      ]);
      expect([a.statusCode, b.statusCode].sort()).toEqual([200, 201]);
      expect([a.json().revision, b.json().revision].sort()).toEqual([1, 2]);
      const last = a.json().revision === 2 ? a.json() : b.json();
      const events = await allConfiguredEvents(name);
      expect(events.map((e) => (e.data as { revision: number }).revision)).toEqual([1, 2]);
      expect((events[1]!.data as { baseUrl: string }).baseUrl).toBe(last.baseUrl);
      expect((await row(name)).baseUrl).toBe(last.baseUrl);
    }
  });

  it('validates settings', async () => {
    const bad = [
      { kind: 'openai_compatible' },
      { kind: 'bedrock' },
      { kind: 'openai', routing: { weight: 5000 } },
      { kind: 'openai', routing: { fallbacks: [`self-${t}`] } },
      { kind: 'openai', baseUrl: 'ftp://example.com' },
      { kind: 'openai', apiKey: '' },
      // 6,200 bytes of UTF-8: more than the event's encrypted envelope holds (it was a 500).
      { kind: 'openai', apiKey: 'é'.repeat(3100) },
      { kind: 'openai', apiKey: 'sk with spaces' },
      { kind: 'openai', secret: 'x' },
    ];
    for (const body of bad) {
      const res = await put(`self-${t}`, body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
    }
    expect((await put('bad name', { kind: 'openai' })).statusCode).toBe(400);
    expect((await admin.call('GET', `/api/v1/admin/providers/none-${t}`)).statusCode).toBe(404);
  });

  it('refuses base URLs that reach private, loopback or link-local addresses unless allowed', async () => {
    for (const baseUrl of [
      'http://127.0.0.1:11434',
      'http://169.254.169.254/latest/meta-data/',
      'http://10.1.2.3:8000/v1',
      'http://192.168.1.10/v1',
      'http://[::1]/v1',
      'http://2130706433/v1',
      'http://localhost:8080/v1',
      'http://user:pass@8.8.8.8/v1',
      'https://intranet.test/v1',
    ]) {
      const res = await put(`compat-${t}`, { kind: 'openai_compatible', baseUrl });
      expect(res.statusCode, baseUrl).toBe(400);
      expect(res.json(), baseUrl).toMatchObject({ code: 'unsafe_provider_url' });
    }
    expect((await configuredEvents(`compat-${t}`)).length).toBe(0);
    expect((await put(`compat-${t}`, { kind: 'openai_compatible', baseUrl: 'https://8.8.8.8/v1' })).statusCode).toBe(201);
    expect((await put(`public-${t}`, { kind: 'openai_compatible', baseUrl: 'https://api.public.test/v1' })).statusCode).toBe(201);

    // PROVIDER_ALLOWED_HOSTS lets chosen private hosts in.
    const allowing = await startAdmin(
      { PROVIDER_ALLOWED_HOSTS: '10.1.2.3, intranet.test', PROVIDER_KEY_ENCRYPTION_KEY: MASTER },
      { resolveHost: async () => [{ address: '10.20.30.40' }] },
    );
    try {
      expect((await put(`vllm-${t}`, { kind: 'openai_compatible', baseUrl: 'http://10.1.2.3:8000/v1' }, allowing)).statusCode).toBe(201);
      expect((await put(`intranet-${t}`, { kind: 'openai_compatible', baseUrl: 'https://intranet.test/v1' }, allowing)).statusCode).toBe(201);
      expect((await put(`other-${t}`, { kind: 'openai_compatible', baseUrl: 'http://10.9.9.9/v1' }, allowing)).statusCode).toBe(400);
    } finally {
      await allowing.close();
    }
  });

  it("republishes every provider's settings at start, at its revision, and audits one record per revision", async () => {
    const name = `republished-${t}`;
    expect((await put(name, { kind: 'openai', models: ['gpt-4o-mini'], apiKey: API_KEY })).statusCode).toBe(201);
    const [original] = await allConfiguredEvents(name);
    const restarted = await startAdmin({ PROVIDER_KEY_ENCRYPTION_KEY: MASTER }, { consumers: true });
    try {
      const events = await allConfiguredEvents(name);
      expect(events.length).toBeGreaterThanOrEqual(2);
      const again = events.at(-1)!;
      expect(again.id).not.toBe(original!.id);
      const { apiKeyEnvelope, ...settings } = again.data as { apiKeyEnvelope: EncryptedSecret };
      const { apiKeyEnvelope: first, ...originalSettings } = original!.data as { apiKeyEnvelope: EncryptedSecret };
      // The same change (actor, revision, settings); the key under a fresh envelope.
      expect(settings).toEqual({ ...originalSettings, actor: { userId: admin.admin.sub } });
      expect(apiKeyEnvelope.iv).not.toBe(first.iv);
      expect(openEventSecret(MASTER, name, apiKeyEnvelope)).toBe(API_KEY);
      // Once admin's consumer has handled it, the audit log still holds the one change.
      await expect
        .poll(async () => (await admin.pg.query('select 1 from admin.processed_events where event_id = $1', [again.id])).rows.length, { timeout: 45_000 })
        .toBe(1);
      const audited = await admin.pg.query(`select id from admin.audit_events where type = $1 and details->>'providerId' = $2`, [EVENTS.adminProviderConfigured.type, name]);
      expect(audited.rows).toEqual([{ id: original!.id }]);
    } finally {
      await restarted.close();
    }
  }, 60_000);

  it('a master key replaced without the old one in PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS: saving without apiKey is 409 api_key_unreadable, with it the key is stored anew', async () => {
    const name = `lost-master-${t}`;
    expect((await put(name, { kind: 'gemini', apiKey: API_KEY })).statusCode).toBe(201);
    const next = randomBytes(32).toString('base64');
    // It starts all the same (the rows it cannot re-wrap stay as they are).
    const replaced = await startAdmin({ PROVIDER_KEY_ENCRYPTION_KEY: next });
    try {
      const unreadable = await put(name, { kind: 'gemini', enabled: false }, replaced);
      expect(unreadable.statusCode).toBe(409);
      expect(unreadable.json()).toMatchObject({ status: 409, code: 'api_key_unreadable' });
      expect((await row(name)).revision).toBe(1);
      const resent = await put(name, { kind: 'gemini', apiKey: `${API_KEY}-new` }, replaced);
      expect(resent.statusCode).toBe(200);
      expect(resent.json()).toMatchObject({ hasApiKey: true, revision: 2 });
      expect(new ProviderKeyVault(next).open(name, sealedKeyOf(await row(name))!)).toBe(`${API_KEY}-new`);
    } finally {
      await replaced.close();
    }
  });

  it('a new master key re-wraps the data keys at start; the API keys stay the same', async () => {
    const name = `rotate-${t}`;
    expect((await put(name, { kind: 'gemini', apiKey: API_KEY })).statusCode).toBe(201);
    const before = await row(name);
    const next = randomBytes(32).toString('base64');
    const rotated = await startAdmin({ PROVIDER_KEY_ENCRYPTION_KEY: next, PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS: MASTER });
    try {
      const after = await row(name);
      const vault = new ProviderKeyVault(next);
      expect(after.kekId).toBe(vault.keyId);
      expect(after.kekId).not.toBe(before.kekId);
      expect(after.apiKeyCiphertext!.equals(before.apiKeyCiphertext!)).toBe(true);
      expect(after.dataKeyWrapped!.equals(before.dataKeyWrapped!)).toBe(false);
      expect(vault.open(name, sealedKeyOf(after)!)).toBe(API_KEY);
      // Saved again: the event carries the key under the new master key.
      expect((await put(name, { kind: 'gemini' }, rotated)).json()).toMatchObject({ hasApiKey: true, revision: 2 });
      const events = await configuredEvents(name);
      expect((events[1]!.data as { revision: number }).revision).toBe(2);
      const envelope = (events[1]!.data as { apiKeyEnvelope: EncryptedSecret }).apiKeyEnvelope;
      expect(envelope.keyId).toBe(vault.keyId);
      expect(openEventSecret(next, name, envelope)).toBe(API_KEY);
      expect(() => openEventSecret(MASTER, name, envelope)).toThrow();
    } finally {
      await rotated.close();
    }
  });
});
