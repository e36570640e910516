import { randomBytes, randomUUID } from 'node:crypto';
import { decodeJwt } from 'jose';
import { Redis } from 'ioredis';
import pg from 'pg';
import type { LightMyRequestResponse } from 'fastify';
import type { DestinationStream } from 'pino';
import { signContext, signInternalCall, type Identity, type ServiceApp } from '@vivier/service-kit';
import { testEnv } from '@vivier/service-kit/testing';
import { buildAuthApp } from '../src/app';
import { loadAuthConfig, type AuthConfig } from '../src/config';
import { timeStep, TOTP_PERIOD_SECONDS } from '../src/modules/mfa/totp.service';

/** A strong password that no dictionary has. */
export const PASSWORD = 'correct horse battery staple 42';

export function uniqueEmail(tag = 'user'): string {
  return `${tag}-${randomUUID().slice(0, 8)}@example.test`;
}

/** A client address of its own, so per-IP limits of one test never touch another's. */
export function randomIp(): string {
  const b = randomBytes(3);
  return `10.${b[0]}.${b[1]}.${b[2]}`;
}

export interface CallOptions {
  body?: unknown;
  /** Signed in as this caller (as the gateway would vouch for it). */
  identity?: Identity;
  /** Client address the gateway vouches for (a random one by default). */
  ip?: string;
  userAgent?: string;
  headers?: Record<string, string>;
  /** Send no gateway context at all. */
  direct?: boolean;
}

export interface AuthHarness {
  app: ServiceApp;
  config: AuthConfig;
  call(method: 'GET' | 'POST' | 'DELETE', url: string, options?: CallOptions): Promise<LightMyRequestResponse>;
  /** A service-to-service call (signed with INTERNAL_IDENTITY_SECRET). */
  internal(method: 'POST', url: string, body?: unknown): Promise<LightMyRequestResponse>;
  register(email?: string, options?: { password?: string; ip?: string; name?: string }): Promise<SignedIn>;
  login(email: string, password?: string, options?: { ip?: string; mfaCode?: string }): Promise<LightMyRequestResponse>;
  /** A PostgreSQL connection as the auth role, for assertions on the auth schema. */
  pg: pg.Pool;
  close(): Promise<void>;
}

export interface SignedIn {
  user: { id: string; email: string; name: string | null; role: 'user' | 'admin'; mfaEnabled: boolean; createdAt: string };
  accessToken: string;
  refreshToken: string;
  expiresIn: number;
}

/** The identity the gateway derives from a verified access token. */
export function identityOf(accessToken: string): Identity {
  const claims = decodeJwt(accessToken) as { sub: string; sid: string; role: 'user' | 'admin' };
  return { sub: claims.sub, sid: claims.sid, role: claims.role, kind: 'access_token' };
}

/**
 * The real auth app on the test run's PostgreSQL, Redis and Kafka, called through inject with the
 * signed context the gateway would add. The consumer of admin.events is off unless asked for.
 */
export async function startAuth(overrides: Record<string, string> = {}, options: { consumers?: boolean; logStream?: DestinationStream } = {}): Promise<AuthHarness> {
  const config = loadAuthConfig(testEnv('auth', overrides));
  const app = await buildAuthApp(config, { consumers: options.consumers ?? false, ...(options.logStream ? { logStream: options.logStream } : {}) });
  await app.ready();
  const pool = new pg.Pool({ connectionString: config.DATABASE_URL, max: 2 });
  pool.on('error', () => undefined);

  const call: AuthHarness['call'] = (method, url, callOptions = {}) => {
    const headers: Record<string, string> = { ...(callOptions.headers ?? {}) };
    if (!callOptions.direct) {
      Object.assign(
        headers,
        signContext(
          {
            ip: callOptions.ip ?? randomIp(),
            userAgent: callOptions.userAgent ?? 'vitest/auth',
            ...(callOptions.identity ? { identity: callOptions.identity } : {}),
            exp: Math.floor(Date.now() / 1000) + 60,
          },
          config.INTERNAL_IDENTITY_SECRET,
        ),
      );
    }
    return app.inject({ method, url, headers, ...(callOptions.body === undefined ? {} : { payload: callOptions.body as Record<string, unknown> }) });
  };

  const harness: AuthHarness = {
    app,
    config,
    pg: pool,
    call,
    internal: (method, url, body) =>
      app.inject({ method, url, headers: signInternalCall(config.INTERNAL_IDENTITY_SECRET), ...(body === undefined ? {} : { payload: body as Record<string, unknown> }) }),
    async register(email = uniqueEmail(), registerOptions = {}) {
      const res = await call('POST', '/api/v1/auth/register', {
        ip: registerOptions.ip ?? randomIp(),
        body: { email, password: registerOptions.password ?? PASSWORD, ...(registerOptions.name ? { name: registerOptions.name } : {}) },
      });
      if (res.statusCode !== 201) throw new Error(`register ${email}: ${res.statusCode} ${res.body}`);
      return res.json<SignedIn>();
    },
    login: (email, password = PASSWORD, loginOptions = {}) =>
      call('POST', '/api/v1/auth/login', {
        ip: loginOptions.ip ?? randomIp(),
        body: { email, password, ...(loginOptions.mfaCode ? { mfaCode: loginOptions.mfaCode } : {}) },
      }),
    async close() {
      await app.close();
      await pool.end();
    },
  };
  return harness;
}

/** Events the auth service wrote to its outbox for a user (by Kafka key), oldest first. */
export async function outboxEvents(pool: pg.Pool, key: string): Promise<Array<{ type: string; data: Record<string, unknown>; raw: string }>> {
  const { rows } = await pool.query<{ envelope: { type: string; data: Record<string, unknown> } }>(
    'select envelope from auth.outbox where key = $1 order by id',
    [key],
  );
  return rows.map((r) => ({ type: r.envelope.type, data: r.envelope.data, raw: JSON.stringify(r.envelope) }));
}

/** A plain Redis client under the test run's key prefix (the one the gateway would use). */
export function testRedis(config: AuthConfig): Redis {
  return new Redis(config.REDIS_URL, { keyPrefix: config.REDIS_KEY_PREFIX, maxRetriesPerRequest: 1 });
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls until `check` returns a value (not undefined / false), or fails after `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T | undefined | false>, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Waits until the current 30 s step has at least `seconds` left, so codes computed now stay in their step. */
export async function freshStep(seconds = 8): Promise<number> {
  const left = TOTP_PERIOD_SECONDS - ((Date.now() / 1000) % TOTP_PERIOD_SECONDS);
  if (left < seconds) await sleep(left * 1000 + 100);
  return timeStep();
}
