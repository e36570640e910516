import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifyContext, type GatewayContext } from '@vivier/service-kit';
import {
  AuthStandIn,
  SECRET,
  bearer,
  cleanup,
  eventually,
  standIn,
  startGateway,
  type Gateway,
  type StandIn,
} from './support';

afterEach(cleanup);

let auth: AuthStandIn;
let chat: StandIn;
let gw: Gateway;
let contexts: Array<GatewayContext | undefined>;

beforeEach(async () => {
  auth = await AuthStandIn.start();
  contexts = [];
  chat = await standIn((req, res) => {
    contexts.push(verifyContext(req.headers, SECRET));
    res.end('{}');
  });
  gw = await startGateway({
    AUTH_URL: auth.url,
    CHAT_URL: chat.url,
    ADMIN_URL: chat.url,
    API_KEY_CACHE_TTL_MS: '1000',
  });
});

const get = (credential: string, url = '/api/v1/chats') =>
  gw.app.inject({ method: 'GET', url, headers: bearer(credential) });

describe('revocation (keys written by auth in Redis)', () => {
  it('refuses a token whose session was revoked, from the next request on', async () => {
    const token = await auth.sign({ sub: 'u-r1', sid: 's-r1' });
    expect((await get(token)).statusCode).toBe(200);
    await gw.redis.set('auth:revoked-session:s-r1', '1', 'EX', 900);
    const res = await get(token);
    expect(res.statusCode).toBe(401);
    expect(res.json()).toMatchObject({
      code: 'invalid_token',
      detail: expect.stringMatching(/session .* revoked/),
    });
    // Another session of the same user is unaffected.
    expect((await get(await auth.sign({ sub: 'u-r1', sid: 's-r2' }))).statusCode).toBe(200);
  });

  it('refuses tokens issued before tokens-valid-after (logout everywhere), accepts newer ones', async () => {
    const now = Math.floor(Date.now() / 1000);
    const old = await auth.sign({ sub: 'u-r2', iat: now - 60 });
    expect((await get(old)).statusCode).toBe(200);
    await gw.redis.set('auth:tokens-valid-after:u-r2', String(now - 10));
    expect((await get(old)).statusCode).toBe(401);
    expect((await get(await auth.sign({ sub: 'u-r2', iat: now }))).statusCode).toBe(200);
  });

  it('refuses every credential of a disabled user: access tokens and API keys', async () => {
    auth.apiKeys.set('vk_disabled_user_key_0000000000', { userId: 'u-r3', keyId: 'key-r3', role: 'user' });
    const token = await auth.sign({ sub: 'u-r3' });
    expect((await get(token)).statusCode).toBe(200);
    expect((await get('vk_disabled_user_key_0000000000')).statusCode).toBe(200);
    await gw.redis.set('auth:user-disabled:u-r3', '1');
    expect((await get(token)).json()).toMatchObject({
      code: 'invalid_token',
      detail: 'The account is disabled.',
    });
    expect((await get('vk_disabled_user_key_0000000000')).statusCode).toBe(401);
    await gw.redis.del('auth:user-disabled:u-r3');
    expect((await get(token)).statusCode).toBe(200);
  });

  it('refuses a revoked API key from its fact at once, though the answer about it is cached', async () => {
    const cached = await startGateway({ AUTH_URL: auth.url, CHAT_URL: chat.url, API_KEY_CACHE_TTL_MS: '5000' });
    auth.apiKeys.set('vk_fact_revoked_key_00000000001', { userId: 'u-r4', keyId: 'key-r4', role: 'user' });
    auth.apiKeys.set('vk_other_key_of_user_000000001', { userId: 'u-r4', keyId: 'key-r5', role: 'user' });
    const call = (key: string) => cached.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(key) });
    expect((await call('vk_fact_revoked_key_00000000001')).statusCode).toBe(200);
    // Auth's fact (its pub/sub message never sent), while the gateway's answer about the key is 5 s good.
    await cached.redis.set('auth:revoked-api-key:key-r4', '1', 'EX', 900);
    const refused = await call('vk_fact_revoked_key_00000000001');
    expect(refused.statusCode).toBe(401);
    expect(refused.json()).toMatchObject({ code: 'invalid_token', detail: 'The API key is invalid or revoked.' });
    // The user's other key is not affected.
    expect((await call('vk_other_key_of_user_000000001')).statusCode).toBe(200);
  });
});

describe('API keys (checked by auth, cached briefly)', () => {
  it('forwards a valid key with an api_key identity, asking auth once while cached', async () => {
    auth.apiKeys.set('vk_valid_key_00000000000000001', { userId: 'u-k1', keyId: 'key-1', role: 'user' });
    for (let i = 0; i < 5; i++)
      expect((await get('vk_valid_key_00000000000000001', '/v1/models')).statusCode).toBe(200);
    expect(auth.verifyRequests).toBe(1);
    expect(contexts[0]).toMatchObject({
      identity: { sub: 'u-k1', keyId: 'key-1', role: 'user', kind: 'api_key' },
    });
    expect(contexts[0]!.identity!.sid).toBeUndefined();
  });

  it("names the client to auth when it asks about a key (auth audits a refused key with the client's address)", async () => {
    const res = await gw.app.inject({
      method: 'GET',
      url: '/v1/models',
      headers: { ...bearer('vk_unknown_key_000000000000001'), 'user-agent': 'openai-node/6.0' },
      remoteAddress: '203.0.113.77',
    });
    expect(res.statusCode).toBe(401);
    expect(auth.verifyBodies).toEqual([{ key: 'vk_unknown_key_000000000000001', ip: '203.0.113.77', userAgent: 'openai-node/6.0' }]);
  });

  it('stops accepting a revoked key within the cache lifetime', async () => {
    auth.apiKeys.set('vk_soon_revoked_key_000000000001', { userId: 'u-k2', keyId: 'key-2', role: 'user' });
    expect((await get('vk_soon_revoked_key_000000000001')).statusCode).toBe(200);
    auth.apiKeys.delete('vk_soon_revoked_key_000000000001'); // revoked at auth
    const revokedAt = Date.now();
    let status = 200;
    while (status === 200 && Date.now() - revokedAt < 5000) {
      status = (await get('vk_soon_revoked_key_000000000001')).statusCode;
      if (status === 200) await new Promise((r) => setTimeout(r, 50));
    }
    expect(status).toBe(401);
    // Within the cache lifetime (1 s) and a margin for a loaded machine; without expiry it would answer 200 for 5 s.
    expect(Date.now() - revokedAt).toBeLessThan(1000 + 1500);
  });

  it('refuses unknown and malformed keys (malformed ones without asking auth)', async () => {
    const unknown = await get('vk_not_a_key_that_exists_000000');
    expect(unknown.statusCode).toBe(401);
    expect(unknown.json()).toMatchObject({ code: 'invalid_token' });
    expect(auth.verifyRequests).toBe(1);
    expect((await get('vk_short')).statusCode).toBe(401);
    expect(auth.verifyRequests).toBe(1);
  });

  it('answers 503 when auth cannot be asked about a key', async () => {
    const down = await startGateway({ AUTH_URL: 'http://127.0.0.1:1', CHAT_URL: chat.url });
    const res = await down.app.inject({
      method: 'GET',
      url: '/api/v1/chats',
      headers: bearer('vk_some_key_while_auth_is_down_0'),
    });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toMatchObject({ code: 'auth_unavailable' });
  });
});

describe('revocations published by auth (pub/sub)', () => {
  async function subscribed(g: Gateway): Promise<string> {
    const channel = `${g.prefix}auth:revocations`;
    await eventually(async () => ((await g.redis.pubsub('NUMSUB', channel)) as [string, number])[1] >= 1);
    return channel;
  }

  it('ends an open SSE reply at once when its session is revoked, and leaves other sessions streaming', async () => {
    const sse = await standIn((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('event: delta\ndata: {"text":"Hel"}\n\n'); // and never ends on its own
    });
    const live = await startGateway({ AUTH_URL: auth.url, CHAT_URL: sse.url }, { listen: true });
    const channel = await subscribed(live);
    const open = async (sid: string) => {
      const res = await fetch(`${live.url}/api/v1/chats/c1/messages`, {
        method: 'POST',
        headers: { accept: 'text/event-stream', ...bearer(await auth.sign({ sub: 'u-sse', sid })) },
      });
      const reader = res.body!.getReader();
      expect(new TextDecoder().decode((await reader.read()).value)).toContain('Hel');
      return reader;
    };
    const revoked = await open('s-sse-1');
    const other = await open('s-sse-2');
    expect(live.app.edgeAuth.openRequests.size).toBe(2);
    const started = Date.now();
    await live.redis.publish(channel, JSON.stringify({ userId: 'u-sse', sid: 's-sse-1' }));
    await expect(
      (async () => {
        for (;;) if ((await revoked.read()).done) return;
      })(),
    ).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(2000);
    expect(live.app.edgeAuth.openRequests.size).toBe(1);
    // Logout everywhere (a message with the user only) ends the rest.
    await live.redis.publish(channel, JSON.stringify({ userId: 'u-sse' }));
    await expect(
      (async () => {
        for (;;) if ((await other.read()).done) return;
      })(),
    ).rejects.toThrow();
    await eventually(() => live.app.edgeAuth.openRequests.size === 0);
  });

  it('ends an open SSE reply within REVOCATION_RECHECK_MS when the revocation message never arrived', async () => {
    const sse = await standIn((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('event: delta\ndata: {"text":"Hel"}\n\n'); // and never ends on its own
    });
    const live = await startGateway({ AUTH_URL: auth.url, CHAT_URL: sse.url, REVOCATION_RECHECK_MS: '300' }, { listen: true });
    const open = async (claims: { sub: string; sid: string; iat?: number }) => {
      const res = await fetch(`${live.url}/api/v1/chats/c1/messages`, {
        method: 'POST',
        headers: { accept: 'text/event-stream', ...bearer(await auth.sign(claims)) },
      });
      const reader = res.body!.getReader();
      expect(new TextDecoder().decode((await reader.read()).value)).toContain('Hel');
      return reader;
    };
    const ended = async (reader: ReadableStreamDefaultReader<Uint8Array>) => {
      const outcome = await Promise.race([
        (async () => {
          try {
            for (;;) if ((await reader.read()).done) return 'ended';
          } catch {
            return 'ended';
          }
        })(),
        new Promise((resolve) => setTimeout(() => resolve('still open after 5 s'), 5000)),
      ]);
      expect(outcome).toBe('ended');
    };
    const now = Math.floor(Date.now() / 1000);
    auth.apiKeys.set('vk_missed_revocation_key_000001', { userId: 'u-miss-4', keyId: 'key-miss-4', role: 'user' });
    const keyRes = await fetch(`${live.url}/api/v1/chats/c1/messages`, {
      method: 'POST',
      headers: { accept: 'text/event-stream', ...bearer('vk_missed_revocation_key_000001') },
    });
    const revokedKey = keyRes.body!.getReader();
    expect(new TextDecoder().decode((await revokedKey.read()).value)).toContain('Hel');
    const revokedSession = await open({ sub: 'u-miss-1', sid: 's-miss-1' });
    const otherSession = await open({ sub: 'u-miss-1', sid: 's-miss-2' });
    const disabledUser = await open({ sub: 'u-miss-2', sid: 's-miss-3' });
    const loggedOutEverywhere = await open({ sub: 'u-miss-3', sid: 's-miss-4', iat: now - 60 });
    expect(live.app.edgeAuth.openRequests.size).toBe(5);
    // The facts auth writes, without the messages it publishes (as if the subscriber missed them).
    await live.redis.set('auth:revoked-session:s-miss-1', '1', 'EX', 900);
    await live.redis.set('auth:revoked-api-key:key-miss-4', '1', 'EX', 900);
    await live.redis.set('auth:user-disabled:u-miss-2', '1', 'EX', 900);
    await live.redis.set('auth:tokens-valid-after:u-miss-3', String(now - 10), 'EX', 900);
    const started = Date.now();
    await ended(revokedSession);
    await ended(disabledUser);
    await ended(loggedOutEverywhere);
    await ended(revokedKey);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(live.app.edgeAuth.openRequests.size).toBe(1);
    // The other session streams on.
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect(live.app.edgeAuth.openRequests.size).toBe(1);
    await otherSession.cancel();
  });

  it('does not end the request that caused the revocation (logout-all), nor streams of a later sign-in', async () => {
    const sse = await standIn((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {}\n\n');
    });
    const live = await startGateway({ AUTH_URL: auth.url, CHAT_URL: sse.url }, { listen: true });
    const channel = await subscribed(live);
    auth.routes.set('POST /api/v1/auth/logout-all', (_req, res) => {
      // Auth publishes while the request is still in flight, then answers.
      void live.redis
        .publish(channel, JSON.stringify({ userId: 'u-la' }))
        .then(() => setTimeout(() => res.writeHead(204).end(), 100));
    });
    const later = await auth.sign({ sub: 'u-la', iat: Math.floor(Date.now() / 1000) + 3 }); // a sign-in after the message
    const stream = await fetch(`${live.url}/api/v1/chats/c1/messages`, {
      method: 'POST',
      headers: bearer(later),
    });
    const reader = stream.body!.getReader();
    await reader.read();
    const res = await fetch(`${live.url}/api/v1/auth/logout-all`, {
      method: 'POST',
      headers: bearer(await auth.sign({ sub: 'u-la' })),
    });
    expect(res.status).toBe(204);
    expect(live.app.edgeAuth.openRequests.size).toBe(1);
    await reader.cancel();
  });

  it('ends at once a stream whose token was issued earlier in the same second as a logout everywhere', async () => {
    const sse = await standIn((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {}\n\n');
    });
    const live = await startGateway({ AUTH_URL: auth.url, CHAT_URL: sse.url }, { listen: true });
    const channel = await subscribed(live);
    // iat to the millisecond, as auth issues them: a little into the current second.
    const msIntoSecond = Date.now() % 1000;
    if (msIntoSecond < 50 || msIntoSecond > 600) await new Promise((resolve) => setTimeout(resolve, 1050 - msIntoSecond));
    const token = await auth.sign({ sub: 'u-same-second', iat: Date.now() / 1000 - 0.01 });
    const stream = await fetch(`${live.url}/api/v1/chats/c1/messages`, { method: 'POST', headers: bearer(token) });
    const reader = stream.body!.getReader();
    await reader.read();
    expect(live.app.edgeAuth.openRequests.size).toBe(1);
    await live.redis.publish(channel, JSON.stringify({ userId: 'u-same-second' }));
    await eventually(() => live.app.edgeAuth.openRequests.size === 0, 2000);
    await reader.cancel().catch(() => undefined);
  });

  it('drops a cached API key at once when auth publishes its revocation', async () => {
    const cached = await startGateway({
      AUTH_URL: auth.url,
      CHAT_URL: chat.url,
      API_KEY_CACHE_TTL_MS: '5000', // the most allowed, beyond the wait below: the message, not the lifetime, drops the key
    });
    const channel = await subscribed(cached);
    auth.apiKeys.set('vk_revoked_via_channel_00000001', { userId: 'u-k3', keyId: 'key-3', role: 'user' });
    const call = () =>
      cached.app.inject({
        method: 'GET',
        url: '/api/v1/chats',
        headers: bearer('vk_revoked_via_channel_00000001'),
      });
    expect((await call()).statusCode).toBe(200);
    auth.apiKeys.delete('vk_revoked_via_channel_00000001');
    await cached.redis.publish(channel, JSON.stringify({ userId: 'u-k3', keyId: 'key-3' }));
    await eventually(async () => (await call()).statusCode === 401, 3000);
  });
});
