import type { DestinationStream } from 'pino';
import {
  createPool,
  createRedis,
  createServiceApp,
  databasePlugin,
  redisPlugin,
  type ServiceApp,
} from '@vivier/service-kit';
import type { AdminConfig } from './config';

export interface BuildAdminAppOptions {
  logStream?: DestinationStream;
}

/** The admin service as an app without a socket: main.ts listens, tests use app.inject. */
export async function buildAdminApp(config: AdminConfig, options: BuildAdminAppOptions = {}): Promise<ServiceApp> {
  const app = await createServiceApp({ service: 'admin', logLevel: config.LOG_LEVEL, logStream: options.logStream });
  await app.register(databasePlugin, {
    pool: createPool({ url: config.DATABASE_URL, poolMax: config.DATABASE_POOL_MAX, applicationName: 'admin' }),
  });
  await app.register(redisPlugin, { redis: createRedis(config.REDIS_URL, { keyPrefix: config.REDIS_KEY_PREFIX, name: 'admin' }) });
  return app;
}
