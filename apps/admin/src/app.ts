import type { DestinationStream } from 'pino';
import {
  createPool,
  createRedis,
  createDatabase,
  createServiceApp,
  databasePlugin,
  identityPlugin,
  redisPlugin,
  type ServiceApp,
} from '@vivier/service-kit';
import { messagingPlugin } from '@vivier/messaging';
import { adminTables, ADMIN_SCHEMA } from '@vivier/db-admin';
import type { AdminConfig } from './config';

export interface BuildAdminAppOptions {
  logStream?: DestinationStream;
}

/** The admin service as an app without a socket: main.ts listens, tests use app.inject. */
export async function buildAdminApp(config: AdminConfig, options: BuildAdminAppOptions = {}): Promise<ServiceApp> {
  const app = await createServiceApp({ service: 'admin', logLevel: config.LOG_LEVEL, logStream: options.logStream });
  const pool = createPool({ url: config.DATABASE_URL, poolMax: config.DATABASE_POOL_MAX, applicationName: 'admin' });
  const db = createDatabase(pool, adminTables);
  await app.register(identityPlugin, { secret: config.INTERNAL_IDENTITY_SECRET });
  await app.register(databasePlugin, { pool });
  await app.register(redisPlugin, { redis: createRedis(config.REDIS_URL, { keyPrefix: config.REDIS_KEY_PREFIX, name: 'admin' }) });
  await app.register(messagingPlugin, {
    service: 'admin',
    schema: ADMIN_SCHEMA,
    config,
    db,
    tables: { outbox: adminTables.outbox, processedEvents: adminTables.processedEvents },
    consumers: [],
  });
  return app;
}
