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
import { authTables, AUTH_SCHEMA } from '@vivier/db-auth';
import type { AuthConfig } from './config';

export interface BuildAuthAppOptions {
  logStream?: DestinationStream;
}

/** The auth service as an app without a socket: main.ts listens, tests use app.inject. */
export async function buildAuthApp(config: AuthConfig, options: BuildAuthAppOptions = {}): Promise<ServiceApp> {
  const app = await createServiceApp({ service: 'auth', logLevel: config.LOG_LEVEL, logStream: options.logStream });
  const pool = createPool({ url: config.DATABASE_URL, poolMax: config.DATABASE_POOL_MAX, applicationName: 'auth' });
  const db = createDatabase(pool, authTables);
  await app.register(identityPlugin, { secret: config.INTERNAL_IDENTITY_SECRET });
  await app.register(databasePlugin, { pool });
  await app.register(redisPlugin, { redis: createRedis(config.REDIS_URL, { keyPrefix: config.REDIS_KEY_PREFIX, name: 'auth' }) });
  await app.register(messagingPlugin, {
    service: 'auth',
    schema: AUTH_SCHEMA,
    config,
    db,
    tables: { outbox: authTables.outbox, processedEvents: authTables.processedEvents },
    consumers: [],
  });
  return app;
}
