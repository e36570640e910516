import type { DestinationStream } from 'pino';
import {
  createPool,
  createRedis,
  createS3,
  createDatabase,
  createServiceApp,
  databasePlugin,
  identityPlugin,
  objectStoragePlugin,
  redisPlugin,
  type ServiceApp,
} from '@vivier/service-kit';
import { messagingPlugin } from '@vivier/messaging';
import { workerTables, WORKER_SCHEMA } from '@vivier/db-worker';
import type { WorkerConfig } from './config';

export interface BuildWorkerAppOptions {
  logStream?: DestinationStream;
}

/** The worker service as an app without a socket: main.ts listens, tests use app.inject. */
export async function buildWorkerApp(config: WorkerConfig, options: BuildWorkerAppOptions = {}): Promise<ServiceApp> {
  const app = await createServiceApp({ service: 'worker', logLevel: config.LOG_LEVEL, logStream: options.logStream });
  const pool = createPool({ url: config.DATABASE_URL, poolMax: config.DATABASE_POOL_MAX, applicationName: 'worker' });
  const db = createDatabase(pool, workerTables);
  await app.register(identityPlugin, { secret: config.INTERNAL_IDENTITY_SECRET });
  await app.register(databasePlugin, { pool });
  await app.register(redisPlugin, { redis: createRedis(config.REDIS_URL, { keyPrefix: config.REDIS_KEY_PREFIX, name: 'worker' }) });
  await app.register(objectStoragePlugin, { client: createS3(config), bucket: config.S3_BUCKET });
  await app.register(messagingPlugin, {
    service: 'worker',
    schema: WORKER_SCHEMA,
    config,
    db,
    tables: { outbox: workerTables.outbox, processedEvents: workerTables.processedEvents },
    consumers: [],
  });
  return app;
}
