import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import pg from 'pg';
import type { LightMyRequestResponse } from 'fastify';
import type { DestinationStream } from 'pino';
import { toKafkaRecord, type AnyEvent } from '@vivier/contracts';
import { signContext, type Identity, type ServiceApp } from '@vivier/service-kit';
import { testEnv } from '@vivier/service-kit/testing';
import type { HostResolver } from '@vivier/providers';
import { buildAdminApp } from '../src/app';
import { loadAdminConfig, type AdminConfig } from '../src/config';

export const ADMIN_ACTOR_IP = '198.51.100.20';
export const ADMIN_USER_AGENT = 'admin console test';

export function adminIdentity(sub: string = randomUUID()): Identity {
  return { sub, role: 'admin', sid: randomUUID(), kind: 'access_token' };
}

export function userIdentity(sub: string = randomUUID()): Identity {
  return { sub, role: 'user', sid: randomUUID(), kind: 'access_token' };
}

/** A short random tag, so names of one test never meet another's in the shared database. */
export function tag(): string {
  return randomBytes(4).toString('hex');
}

export interface CallOptions {
  body?: unknown;
  /** The caller the gateway vouches for (an admin by default); null: no identity. */
  identity?: Identity | null;
  headers?: Record<string, string>;
}

export interface AdminHarness {
  app: ServiceApp;
  config: AdminConfig;
  /** The identity calls use unless told otherwise. */
  admin: Identity;
  call(method: 'GET' | 'PATCH' | 'PUT' | 'POST' | 'DELETE', url: string, options?: CallOptions): Promise<LightMyRequestResponse>;
  /** A PostgreSQL connection as the admin role, for assertions on the admin schema. */
  pg: pg.Pool;
  close(): Promise<void>;
}

/**
 * The provider priced in the test run's price table. Every admin of the run consumes in the group
 * `admin`, so an event read-models.test.ts produces may be applied by the admin of another file:
 * they all price alike. (It was a flaky test: a reply applied elsewhere cost nothing.)
 */
export const PRICED_PROVIDER = `t${(process.env.VIVIER_TEST_RUN_ID ?? randomBytes(4).toString('hex')).replace(/[^A-Za-z0-9]/g, '')}p`;
/** USD per million tokens: `alpha` listed, any other model by the provider wildcard. */
export const TEST_PRICES = { [`${PRICED_PROVIDER}/alpha`]: { input: 1.5, output: 6 }, [`${PRICED_PROVIDER}/*`]: { input: 0.5, output: 1 } };
let priceTable: string | undefined;
function testPriceTable(): string {
  if (!priceTable) {
    priceTable = path.join(mkdtempSync(path.join(os.tmpdir(), 'admin-prices-')), 'prices.json');
    writeFileSync(priceTable, JSON.stringify(TEST_PRICES));
  }
  return priceTable;
}

/** The real admin app on the test run's PostgreSQL, Redis and Kafka, called as the gateway would. */
export async function startAdmin(
  overrides: Record<string, string> = {},
  options: { consumers?: boolean; logStream?: DestinationStream; resolveHost?: HostResolver } = {},
): Promise<AdminHarness> {
  const config = loadAdminConfig(testEnv('admin', { CONSUMER_SESSION_TIMEOUT_MS: '6000', PRICE_TABLE_FILE: testPriceTable(), ...overrides }));
  const app = await buildAdminApp(config, {
    consumers: options.consumers ?? false,
    ...(options.logStream ? { logStream: options.logStream } : {}),
    ...(options.resolveHost ? { resolveHost: options.resolveHost } : {}),
  });
  await app.ready();
  const pool = new pg.Pool({ connectionString: config.DATABASE_URL, max: 2 });
  pool.on('error', () => undefined);
  const admin = adminIdentity();
  return {
    app,
    config,
    admin,
    pg: pool,
    call: (method, url, callOptions = {}) => {
      const identity = callOptions.identity === undefined ? admin : callOptions.identity;
      const context = signContext(
        { ip: ADMIN_ACTOR_IP, userAgent: ADMIN_USER_AGENT, ...(identity ? { identity } : {}), exp: Math.floor(Date.now() / 1000) + 60 },
        config.INTERNAL_IDENTITY_SECRET,
      );
      return app.inject({
        method,
        url,
        headers: { ...context, ...(callOptions.headers ?? {}) },
        ...(callOptions.body === undefined ? {} : { payload: callOptions.body as Record<string, unknown> }),
      });
    },
    close: async () => {
      await pool.end();
      await app.close();
    },
  };
}

/** A plain kafkajs producer on the test run's broker, producing records as a service's relay would. */
export async function eventProducer(): Promise<{ produce(...events: AnyEvent[]): Promise<void>; close(): Promise<void> }> {
  const kafka = new Kafka({ clientId: `admin-test-${tag()}`, brokers: process.env.KAFKA_BROKERS!.split(','), logLevel: logLevel.NOTHING });
  const producer: Producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  return {
    async produce(...events) {
      const byTopic = new Map<string, Array<{ key: string; value: string; headers: Record<string, string> }>>();
      for (const event of events) {
        const { topic, key, value, headers } = toKafkaRecord(event);
        byTopic.set(topic, [...(byTopic.get(topic) ?? []), { key, value, headers }]);
      }
      await producer.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })) });
    },
    close: () => producer.disconnect(),
  };
}

/** Polls `check` until it returns true (or a value), failing with `what` after `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T | false | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const result = await check();
      if (result !== false && result !== undefined) return result;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastError ? `: ${(lastError as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Events this service wrote to its outbox about one subject, oldest first. */
export async function outboxEvents(pool: pg.Pool, subject: string): Promise<Array<{ type: string; id: string; data: Record<string, unknown>; publishedAt: Date | null; raw: string }>> {
  const { rows } = await pool.query<{ envelope: { type: string; id: string; data: Record<string, unknown> }; published_at: Date | null; raw: string }>(
    `select envelope, envelope::text as raw, published_at from admin.outbox where envelope->>'subject' = $1 order by id`,
    [subject],
  );
  return rows.map((r) => ({ type: r.envelope.type, id: r.envelope.id, data: r.envelope.data, publishedAt: r.published_at, raw: r.raw }));
}
