import type { DestinationStream } from 'pino';
import {
  createPool,
  createRedis,
  createDatabase,
  createServiceApp,
  databasePlugin,
  identityPlugin,
  redisPlugin,
  requireAdmin,
  closeStep,
  type ServiceApp,
} from '@vivier/service-kit';
import { createPublisher, messagingPlugin } from '@vivier/messaging';
import { previousProviderKeys, type HostResolver } from '@vivier/providers';
import { adminTables, ADMIN_SCHEMA } from '@vivier/db-admin';
import { allowedProviderHostsOf, priceTableOf, type AdminConfig } from './config';
import { auditHandlers } from './modules/audit/audit.consumer';
import { auditRepository } from './modules/audit/audit.repository';
import { auditRoutes } from './modules/audit/audit.routes';
import { AuditService } from './modules/audit/audit.service';
import { ProviderKeyVault } from './modules/providers/provider-keys.service';
import { providersRepository } from './modules/providers/providers.repository';
import { providersRoutes } from './modules/providers/providers.routes';
import { ProvidersService } from './modules/providers/providers.service';
import { quotasRepository } from './modules/quotas/quotas.repository';
import { quotasRoutes } from './modules/quotas/quotas.routes';
import { QuotasService } from './modules/quotas/quotas.service';
import { readModelsConsumer } from './modules/read-models.consumer';
import { usageHandlers } from './modules/usage/usage.consumer';
import { usageRepository } from './modules/usage/usage.repository';
import { usageRoutes } from './modules/usage/usage.routes';
import { UsageService } from './modules/usage/usage.service';
import { usersHandlers } from './modules/users/users.consumer';
import { usersRepository } from './modules/users/users.repository';
import { usersRoutes } from './modules/users/users.routes';
import { UsersService } from './modules/users/users.service';

export interface BuildAdminAppOptions {
  logStream?: DestinationStream;
  /**
   * Run the read-model consumer (default true). Tests that do not need it turn it off so that
   * short-lived apps do not keep rebalancing the `admin` consumer group.
   */
  consumers?: boolean;
  /** DNS used by the SSRF check of provider base URLs (the system resolver by default). */
  resolveHost?: HostResolver;
}

/** The admin service as an app without a socket: main.ts listens, tests use app.inject. */
export async function buildAdminApp(config: AdminConfig, options: BuildAdminAppOptions = {}): Promise<ServiceApp> {
  const app = await createServiceApp({ service: 'admin', logLevel: config.LOG_LEVEL, logStream: options.logStream });
  const pool = createPool({ url: config.DATABASE_URL, poolMax: config.DATABASE_POOL_MAX, applicationName: 'admin' });
  const db = createDatabase(pool, adminTables);
  await app.register(identityPlugin, { secret: config.INTERNAL_IDENTITY_SECRET });
  await app.register(databasePlugin, { pool });
  await app.register(redisPlugin, { redis: createRedis(config.REDIS_URL, { keyPrefix: config.REDIS_KEY_PREFIX, name: 'admin' }) });

  const publish = createPublisher(adminTables.outbox);
  const audit = new AuditService(auditRepository(db));
  const users = usersRepository(db);
  const usage = usageRepository(db);
  const usageService = new UsageService({ repository: usage, prices: priceTableOf(config) });
  const providers = new ProvidersService({
    db,
    repository: providersRepository(db),
    vault: new ProviderKeyVault(config.PROVIDER_KEY_ENCRYPTION_KEY, previousProviderKeys(config)),
    publish,
    audit,
    allowedHosts: allowedProviderHostsOf(config),
    log: app.log,
    ...(options.resolveHost ? { resolve: options.resolveHost } : {}),
  });

  await app.register(messagingPlugin, {
    service: 'admin',
    schema: ADMIN_SCHEMA,
    config,
    db,
    tables: { outbox: adminTables.outbox, processedEvents: adminTables.processedEvents },
    consumers:
      options.consumers === false ? [] : [readModelsConsumer(usersHandlers(users), usageHandlers({ usage: usageService, repository: usage }), auditHandlers(audit))],
  });

  // Every admin route needs the admin role (the gateway checks it too): 401 without a caller,
  // 403 for anyone else, before the body is even read.
  await app.register(async (admin: ServiceApp) => {
    admin.addHook('onRequest', requireAdmin);
    await admin.register(usersRoutes, { users: new UsersService({ db, repository: users, publish, audit }) });
    await admin.register(usageRoutes, { usage: usageService });
    await admin.register(auditRoutes, { audit });
    await admin.register(quotasRoutes, { quotas: new QuotasService({ db, repository: quotasRepository(db), users, publish, audit }) });
    await admin.register(providersRoutes, { providers });
  });

  // Every provider's settings again, at start and every PROVIDER_REPUBLISH_HOURS: see republish().
  let running: Promise<unknown> | undefined;
  const republish = () =>
    (running ??= providers
      .republish()
      .catch((error: unknown) => app.log.error({ err: error }, 'could not republish the provider settings'))
      .finally(() => (running = undefined)));
  let republishing: NodeJS.Timeout | undefined;
  app.addHook('onReady', async () => {
    await providers.rewrapDataKeys();
    await republish();
    if (config.PROVIDER_REPUBLISH_HOURS > 0) republishing = setInterval(() => void republish(), config.PROVIDER_REPUBLISH_HOURS * 3_600_000).unref();
  });
  closeStep(app, 'admin: settings republish', async () => {
    clearInterval(republishing);
    await running;
  });
  return app;
}
