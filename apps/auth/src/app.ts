import { sessionsHousekeeping } from './modules/sessions/sessions.housekeeping';
import type { DestinationStream } from 'pino';
import {
  createPool,
  createRedis,
  createDatabase,
  createServiceApp,
  databasePlugin,
  identityPlugin,
  redisPlugin,
  closeStep,
  type ServiceApp,
} from '@vivier/service-kit';
import { createPublisher, messagingPlugin } from '@vivier/messaging';
import { authTables, AUTH_SCHEMA } from '@vivier/db-auth';
import { adminEmailsOf, oidcProvidersOf, type AuthConfig } from './config';
import { SecretBox } from './security/secret-box';
import { accountsRoutes } from './modules/accounts/accounts.routes';
import { AccountsService } from './modules/accounts/accounts.service';
import { adminEventsConsumer } from './modules/accounts/accounts.consumer';
import { apiKeysRoutes } from './modules/api-keys/api-keys.routes';
import { ApiKeysService } from './modules/api-keys/api-keys.service';
import { mfaRoutes } from './modules/mfa/mfa.routes';
import { MfaService } from './modules/mfa/mfa.service';
import { oidcRoutes } from './modules/oidc/oidc.routes';
import { OidcService } from './modules/oidc/oidc.service';
import { PasswordHasher } from './modules/passwords/passwords.service';
import { RevocationNotifier } from './modules/revocation/revocation.service';
import { sessionsRoutes } from './modules/sessions/sessions.routes';
import { SessionsService } from './modules/sessions/sessions.service';
import { AttemptLimiter } from './modules/throttling/throttling.service';
import { tokensRoutes } from './modules/tokens/tokens.routes';
import { AccessTokenIssuer, SigningKeyRing } from './modules/tokens/tokens.service';

export interface BuildAuthAppOptions {
  logStream?: DestinationStream;
  /**
   * Run the `admin.events` consumer (default true). Tests that do not exercise it turn it off so
   * that many short-lived apps do not keep rebalancing the `auth` consumer group.
   */
  consumers?: boolean;
}

/** The auth service as an app without a socket: main.ts listens, tests use app.inject. */
export async function buildAuthApp(config: AuthConfig, options: BuildAuthAppOptions = {}): Promise<ServiceApp> {
  const app = await createServiceApp({ service: 'auth', logLevel: config.LOG_LEVEL, logStream: options.logStream });
  const pool = createPool({ url: config.DATABASE_URL, poolMax: config.DATABASE_POOL_MAX, applicationName: 'auth' });
  const db = createDatabase(pool, authTables);
  await app.register(identityPlugin, { secret: config.INTERNAL_IDENTITY_SECRET });
  await app.register(databasePlugin, { pool });
  await app.register(redisPlugin, { redis: createRedis(config.REDIS_URL, { keyPrefix: config.REDIS_KEY_PREFIX, name: 'auth' }) });

  const box = new SecretBox(config.AUTH_KEY_ENCRYPTION_KEY);
  const revocations = new RevocationNotifier(app.redis, app.log, { keyPrefix: config.REDIS_KEY_PREFIX, accessTokenTtlSeconds: config.ACCESS_TOKEN_TTL_SECONDS });
  const keys = new SigningKeyRing(db, box, { accessTokenTtlSeconds: config.ACCESS_TOKEN_TTL_SECONDS, rotationDays: config.JWT_KEY_ROTATION_DAYS, publishAheadSeconds: config.JWT_KEY_PUBLISH_AHEAD_SECONDS, log: app.log });
  const issuer = new AccessTokenIssuer(keys, { issuer: config.JWT_ISSUER, audience: config.JWT_AUDIENCE, ttlSeconds: config.ACCESS_TOKEN_TTL_SECONDS });
  const passwords = new PasswordHasher({ memoryCost: config.ARGON2_MEMORY_KIB, timeCost: config.ARGON2_TIME_COST, parallelism: config.ARGON2_PARALLELISM });
  const publish = createPublisher(authTables.outbox);
  const sessions = new SessionsService({
    db,
    publish,
    issuer,
    revocations,
    successorKey: box.derive('refresh-token-successor'),
    lifetimeSeconds: config.REFRESH_TOKEN_LIFETIME_SECONDS,
    reuseGraceMs: config.REFRESH_TOKEN_REUSE_GRACE_MS,
    log: app.log,
  });
  const limiter = new AttemptLimiter(app.redis, app.log);
  const mfa = new MfaService({
    db,
    publish,
    box,
    sessions,
    totpIssuer: config.TOTP_ISSUER,
    limiter,
    codeAttempts: { limit: config.LOGIN_MAX_FAILURES_PER_ACCOUNT, windowSeconds: config.LOGIN_THROTTLE_WINDOW_SECONDS },
    log: app.log,
  });
  const accounts = new AccountsService({
    db,
    publish,
    passwords,
    limiter,
    sessions,
    mfa,
    adminEmails: adminEmailsOf(config),
    log: app.log,
    limits: {
      registerPerIp: config.REGISTER_RATE_LIMIT_PER_IP,
      registerWindowSeconds: config.REGISTER_RATE_LIMIT_WINDOW_SECONDS,
      loginFailuresPerAccount: config.LOGIN_MAX_FAILURES_PER_ACCOUNT,
      loginFailuresPerIp: config.LOGIN_MAX_FAILURES_PER_IP,
      loginWindowSeconds: config.LOGIN_THROTTLE_WINDOW_SECONDS,
    },
  });
  const apiKeys = new ApiKeysService({ db, publish, revocations, log: app.log });
  const oidc = new OidcService({
    db,
    publish,
    box,
    accounts,
    providers: oidcProvidersOf(config),
    publicBaseUrl: config.PUBLIC_BASE_URL,
    flowTtlSeconds: config.OIDC_FLOW_TTL_SECONDS,
    secureCookies: config.PUBLIC_BASE_URL.startsWith('https:'),
    mfa,
    log: app.log,
  });

  await app.register(messagingPlugin, {
    service: 'auth',
    schema: AUTH_SCHEMA,
    config,
    db,
    tables: { outbox: authTables.outbox, processedEvents: authTables.processedEvents },
    consumers: options.consumers === false ? [] : [adminEventsConsumer({ accounts: accounts.repository, sessions, revocations, log: app.log })],
    housekeeping: [sessionsHousekeeping({ revokedRetentionDays: 30 })],
  });

  const activeCaller = accounts.callerGuard({ apiKeys: true });
  const signedInCaller = accounts.callerGuard({ apiKeys: false });
  // Every answer of the auth API carries credentials (tokens, a new API key, recovery codes) or an
  // account's own data: no cache on the way keeps it (RFC 6749 §5.1 for the token responses).
  app.addHook('onSend', async (request, reply) => {
    if (request.url.startsWith('/api/') && !reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
  });
  await app.register(accountsRoutes, { accounts, activeCaller, signedInCaller });
  await app.register(sessionsRoutes, { sessions, signedInCaller });
  await app.register(mfaRoutes, { mfa, signedInCaller });
  await app.register(oidcRoutes, { oidc, clientRedirectUrl: config.OIDC_CLIENT_REDIRECT_URL });
  await app.register(apiKeysRoutes, { apiKeys, signedInCaller });
  await app.register(tokensRoutes, { keys });

  app.addHook('onReady', async () => {
    // A signing key exists (and is cached) before the first sign-in; the dummy hash too.
    // Redis gets a moment to connect, so the first requests use the shared counters rather
    // than the in-process fallback; it is not required (see README: Redis outage).
    await Promise.all([keys.activeKey(), passwords.warmUp(), redisConnected(app.redis, 3000)]);
  });
  closeStep(app, 'auth: revocations', () => revocations.stop());
  return app;
}

/** Resolves once Redis is connected, or after `timeoutMs` whatever its state. */
function redisConnected(redis: ServiceApp['redis'], timeoutMs: number): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      redis.off('ready', done);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    redis.once('ready', done);
  });
}
