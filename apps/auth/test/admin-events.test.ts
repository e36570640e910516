import { randomUUID } from 'node:crypto';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEvent, EVENTS, toKafkaRecord, type AnyEvent } from '@vivier/contracts';
import { PASSWORD, eventually, identityOf, outboxEvents, startAuth, uniqueEmail, type AuthHarness, type SignedIn } from './helpers';

let auth: AuthHarness;
let producer: Producer;
const admin = { userId: randomUUID(), ip: '198.51.100.20', userAgent: 'admin console' };

beforeAll(async () => {
  auth = await startAuth({ CONSUMER_SESSION_TIMEOUT_MS: '6000' }, { consumers: true });
  const kafka = new Kafka({ clientId: 'auth-test-admin', brokers: auth.config.KAFKA_BROKERS.split(','), logLevel: logLevel.NOTHING });
  producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
});
afterAll(async () => {
  await producer?.disconnect();
  await auth?.close();
});

/** Produces an event on admin.events as the admin service's relay would. */
async function produce(event: AnyEvent): Promise<void> {
  const record = toKafkaRecord(event);
  await producer.send({ topic: record.topic, acks: -1, messages: [{ key: record.key, value: record.value, headers: record.headers }] });
}

async function userState(userId: string): Promise<{ role: string; disabled_at: Date | null }> {
  const { rows } = await auth.pg.query<{ role: string; disabled_at: Date | null }>('select role, disabled_at from auth.users where id = $1', [userId]);
  return rows[0]!;
}

describe('admin.events consumer', () => {
  it('disables a user: every session revoked at once, refresh, /me and sign-in fail, the gateway keys are set; the same event twice has one effect', async () => {
    const email = uniqueEmail('disabled');
    const first = await auth.register(email);
    const second = (await auth.login(email)).json<SignedIn>();
    const userId = first.user.id;
    const apiKey = (await auth.call('POST', '/api/v1/auth/api-keys', { identity: identityOf(first.accessToken), body: { name: 'k' } })).json<{ key: string }>().key;

    const disabled = createEvent(EVENTS.adminUserDisabled, { actor: admin, userId, reason: 'abuse report' });
    await produce(disabled);
    await eventually(async () => (await userState(userId)).disabled_at !== null, 45_000, 'the user to be disabled');

    for (const s of [first, second]) {
      expect(await auth.app.redis.get(`auth:revoked-session:${identityOf(s.accessToken).sid}`)).toBe('1');
      expect((await auth.call('POST', '/api/v1/auth/refresh', { body: { refreshToken: s.refreshToken } })).statusCode).toBe(401);
    }
    expect(await auth.app.redis.get(`auth:user-disabled:${userId}`)).toBe('1');
    expect(await auth.app.redis.ttl(`auth:user-disabled:${userId}`)).toBe(-1);
    expect(Number(await auth.app.redis.get(`auth:tokens-valid-after:${userId}`))).toBeGreaterThan(0);
    const me = await auth.call('GET', '/api/v1/auth/me', { identity: identityOf(second.accessToken) });
    expect(me.statusCode).toBe(403);
    expect(me.json()).toMatchObject({ code: 'account_disabled' });
    expect((await auth.login(email, PASSWORD)).json()).toMatchObject({ code: 'account_disabled' });
    expect((await auth.internal('POST', '/internal/v1/api-keys/verify', { key: apiKey })).json()).toMatchObject({ code: 'invalid_api_key' });

    // The same event again (a redelivery), then an enable for the same user (same key, same
    // partition, so it is handled after the duplicate).
    await produce(disabled);
    await produce(createEvent(EVENTS.adminUserEnabled, { actor: admin, userId }));
    await eventually(async () => (await userState(userId)).disabled_at === null, 45_000, 'the user to be enabled');
    expect(await auth.app.redis.exists(`auth:user-disabled:${userId}`)).toBe(0);
    const revocations = (await outboxEvents(auth.pg, userId)).filter((e) => e.type === 'vivier.auth.session.revoked.v1');
    expect(revocations).toHaveLength(1);
    expect(revocations[0]!.data).toMatchObject({ reason: 'admin_disabled', actor: admin });
    expect((revocations[0]!.data.sessionIds as string[]).sort()).toEqual([identityOf(first.accessToken).sid, identityOf(second.accessToken).sid].sort());
    const { rows } = await auth.pg.query('select 1 from auth.processed_events where consumer_group = $1 and event_id = $2', ['auth', disabled.id]);
    expect(rows).toHaveLength(1);

    // Enabled again: signing in works; the revoked sessions stay revoked.
    expect((await auth.login(email, PASSWORD)).statusCode).toBe(200);
    expect((await auth.call('POST', '/api/v1/auth/refresh', { body: { refreshToken: first.refreshToken } })).statusCode).toBe(401);
  }, 120_000);

  it('applies a role change: earlier tokens stop working at the gateway, new tokens carry the role', async () => {
    const signedIn = await auth.register();
    const userId = signedIn.user.id;
    await produce(createEvent(EVENTS.adminUserRoleChanged, { actor: admin, userId, role: 'admin', previousRole: 'user' }));
    await eventually(async () => (await userState(userId)).role === 'admin', 45_000, 'the role change');
    expect(await auth.app.redis.get(`auth:tokens-valid-after:${userId}`)).not.toBeNull();
    const refreshed = await auth.call('POST', '/api/v1/auth/refresh', { body: { refreshToken: signedIn.refreshToken } });
    expect(identityOf(refreshed.json<SignedIn>().accessToken).role).toBe('admin');
  }, 60_000);
});
