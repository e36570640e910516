import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signInternalCall } from '@vivier/service-kit';
import { identityOf, startAuth, type AuthHarness } from './helpers';

let auth: AuthHarness;
beforeAll(async () => {
  auth = await startAuth();
});
afterAll(async () => {
  await auth.close();
});

interface Created {
  id: string;
  name: string;
  key: string;
  prefix: string;
  createdAt: string;
}

describe('API keys', () => {
  it('creates a key shown once (vk_ + 256 bits), stored as a hash, listed by prefix and name', async () => {
    const owner = await auth.register();
    const identity = identityOf(owner.accessToken);
    const res = await auth.call('POST', '/api/v1/auth/api-keys', { identity, body: { name: 'laptop CLI' } });
    expect(res.statusCode).toBe(201);
    const created = res.json<Created>();
    expect(created).toMatchObject({ id: expect.any(String), name: 'laptop CLI', key: expect.stringMatching(/^vk_[A-Za-z0-9_-]{43}$/) });
    expect(Buffer.from(created.key.slice(3), 'base64url')).toHaveLength(32);

    const list = await auth.call('GET', '/api/v1/auth/api-keys', { identity });
    expect(list.statusCode).toBe(200);
    const { items } = list.json<{ items: Array<Record<string, unknown>> }>();
    expect(items).toEqual([{ id: created.id, name: 'laptop CLI', prefix: created.key.slice(0, 11), createdAt: created.createdAt, lastUsedAt: null }]);
    expect(list.body).not.toContain(created.key);

    const { rows } = await auth.pg.query('select * from auth.api_keys where id = $1', [created.id]);
    expect(JSON.stringify(rows)).not.toContain(created.key);
  });

  it('pages through keys created within one millisecond without leaving any out', async () => {
    const owner = await auth.register();
    const identity = identityOf(owner.accessToken);
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await auth.call('POST', '/api/v1/auth/api-keys', { identity, body: { name: `key ${i}` } })).json<Created>().id);
    // PostgreSQL keeps microseconds; a cursor, a JavaScript date, keeps milliseconds.
    await auth.pg.query(
      `update auth.api_keys set created_at = '2026-11-01T10:00:00.123000Z'::timestamptz + (n * interval '100 microseconds')
       from (select id, row_number() over (order by id) as n from auth.api_keys where id = any($1::uuid[])) k where auth.api_keys.id = k.id`,
      [ids],
    );
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const res = await auth.call('GET', `/api/v1/auth/api-keys?limit=1${cursor ? `&cursor=${cursor}` : ''}`, { identity });
      const page: { items: Array<{ id: string }>; nextCursor: string | null } = res.json();
      seen.push(...page.items.map((k) => k.id));
      cursor = page.nextCursor;
    } while (cursor && seen.length < 10);
    expect(seen.sort()).toEqual([...ids].sort());
  });

  it('verifies a key for the gateway (internal route), records its use, and refuses revoked keys', async () => {
    const owner = await auth.register();
    const identity = identityOf(owner.accessToken);
    const created = (await auth.call('POST', '/api/v1/auth/api-keys', { identity, body: { name: 'ci' } })).json<Created>();

    const verified = await auth.internal('POST', '/internal/v1/api-keys/verify', { key: created.key });
    expect(verified.statusCode).toBe(200);
    expect(verified.json()).toEqual({ userId: owner.user.id, keyId: created.id, role: 'user' });
    await expect
      .poll(async () => (await auth.call('GET', '/api/v1/auth/api-keys', { identity })).json<{ items: Array<{ lastUsedAt: string | null }> }>().items[0]!.lastUsedAt, { timeout: 10_000 })
      .not.toBeNull();

    const wrong = await auth.internal('POST', '/internal/v1/api-keys/verify', { key: `vk_${'x'.repeat(43)}` });
    expect(wrong.statusCode).toBe(401);
    expect(wrong.json()).toMatchObject({ code: 'invalid_api_key' });

    expect((await auth.call('DELETE', `/api/v1/auth/api-keys/${created.id}`, { identity })).statusCode).toBe(204);
    // The fact gateways check on every request (and against what is still open), for a day.
    expect(await auth.app.redis.get(`auth:revoked-api-key:${created.id}`)).toBe('1');
    expect(await auth.app.redis.ttl(`auth:revoked-api-key:${created.id}`)).toBeGreaterThan(24 * 3600 - 60);
    const revoked = await auth.internal('POST', '/internal/v1/api-keys/verify', { key: created.key });
    expect(revoked.statusCode).toBe(401);
    expect(revoked.json()).toMatchObject({ code: 'invalid_api_key' });
    expect((await auth.call('GET', '/api/v1/auth/api-keys', { identity })).json<{ items: unknown[] }>().items).toEqual([]);
  });

  it('refuses an internal verify call that is not signed by a service (or signed with another secret)', async () => {
    const owner = await auth.register();
    const created = (await auth.call('POST', '/api/v1/auth/api-keys', { identity: identityOf(owner.accessToken), body: { name: 'x' } })).json<Created>();
    const unsigned = await auth.app.inject({ method: 'POST', url: '/internal/v1/api-keys/verify', payload: { key: created.key } });
    expect(unsigned.statusCode).toBe(403);
    // Even with a user's gateway context: that vouches for a user, not for a service.
    const asUser = await auth.call('POST', '/internal/v1/api-keys/verify', { identity: identityOf(owner.accessToken), body: { key: created.key } });
    expect(asUser.statusCode).toBe(403);
    const forged = await auth.app.inject({
      method: 'POST',
      url: '/internal/v1/api-keys/verify',
      headers: signInternalCall('another-secret-that-is-at-least-32-bytes-long'),
      payload: { key: created.key },
    });
    expect(forged.statusCode).toBe(403);
  });

  it('records every refused key as an audit event with the client the gateway names — never the key', async () => {
    const owner = await auth.register();
    const identity = identityOf(owner.accessToken);
    const created = (await auth.call('POST', '/api/v1/auth/api-keys', { identity, body: { name: 'audited' } })).json<Created>();
    const ip = `198.51.100.${Math.floor(Math.random() * 200) + 20}`;
    const client = { ip, userAgent: 'openai-node/6.0' };
    const refusals = async () => {
      const { rows } = await auth.pg.query<{ envelope: { type: string; data: Record<string, unknown> } }>(
        "select envelope from auth.outbox where envelope->>'type' = 'vivier.auth.operation.failed.v1' and envelope->'data'->'actor'->>'ip' = $1 order by id",
        [ip],
      );
      return rows.map((r) => r.envelope.data);
    };
    const guessed = `vk_${randomUUID().replaceAll('-', '')}${'y'.repeat(11)}`;
    expect((await auth.internal('POST', '/internal/v1/api-keys/verify', { key: guessed, ...client })).statusCode).toBe(401);
    expect((await auth.internal('POST', '/internal/v1/api-keys/verify', { key: 'not-a-key', ...client })).statusCode).toBe(401);
    await auth.pg.query('update auth.users set disabled_at = now() where id = $1', [owner.user.id]);
    expect((await auth.internal('POST', '/internal/v1/api-keys/verify', { key: created.key, ...client })).statusCode).toBe(401);
    await auth.pg.query('update auth.users set disabled_at = null where id = $1', [owner.user.id]);
    expect((await auth.internal('POST', '/internal/v1/api-keys/verify', { key: created.key, ...client })).statusCode).toBe(200);

    const events = await refusals();
    expect(events).toEqual([
      { operation: 'api_key', reason: 'invalid_token', actor: client },
      { operation: 'api_key', reason: 'invalid_token', actor: client },
      { operation: 'api_key', reason: 'account_disabled', userId: owner.user.id, actor: { ...client, userId: owner.user.id } },
    ]);
    expect(JSON.stringify(events)).not.toContain(created.key);
    expect(JSON.stringify(events)).not.toContain(guessed);
  });

  it('keeps keys to their owner: another user cannot revoke them (404), and API keys cannot mint more keys', async () => {
    const owner = await auth.register();
    const stranger = await auth.register();
    const created = (await auth.call('POST', '/api/v1/auth/api-keys', { identity: identityOf(owner.accessToken), body: { name: 'mine' } })).json<Created>();
    expect((await auth.call('DELETE', `/api/v1/auth/api-keys/${created.id}`, { identity: identityOf(stranger.accessToken) })).statusCode).toBe(404);
    expect((await auth.call('DELETE', `/api/v1/auth/api-keys/${randomUUID()}`, { identity: identityOf(owner.accessToken) })).statusCode).toBe(404);
    expect((await auth.internal('POST', '/internal/v1/api-keys/verify', { key: created.key })).statusCode).toBe(200);
    const viaKey = await auth.call('POST', '/api/v1/auth/api-keys', {
      identity: { sub: owner.user.id, role: 'user', keyId: created.id, kind: 'api_key' },
      body: { name: 'escalation' },
    });
    expect(viaKey.statusCode).toBe(403);
    // /me works with an API key.
    expect((await auth.call('GET', '/api/v1/auth/me', { identity: { sub: owner.user.id, role: 'user', keyId: created.id, kind: 'api_key' } })).statusCode).toBe(200);
  });
});
