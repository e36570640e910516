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
import { chatTables, CHAT_SCHEMA } from '@vivier/db-chat';
import type { ChatConfig } from './config';

export interface BuildChatAppOptions {
  logStream?: DestinationStream;
}

/** The chat service as an app without a socket: main.ts listens, tests use app.inject. */
export async function buildChatApp(config: ChatConfig, options: BuildChatAppOptions = {}): Promise<ServiceApp> {
  const app = await createServiceApp({ service: 'chat', logLevel: config.LOG_LEVEL, logStream: options.logStream });
  const pool = createPool({ url: config.DATABASE_URL, poolMax: config.DATABASE_POOL_MAX, applicationName: 'chat' });
  const db = createDatabase(pool, chatTables);
  await app.register(identityPlugin, { secret: config.INTERNAL_IDENTITY_SECRET });
  await app.register(databasePlugin, { pool });
  await app.register(redisPlugin, { redis: createRedis(config.REDIS_URL, { keyPrefix: config.REDIS_KEY_PREFIX, name: 'chat' }) });
  await app.register(objectStoragePlugin, { client: createS3(config), bucket: config.S3_BUCKET });
  await app.register(messagingPlugin, {
    service: 'chat',
    schema: CHAT_SCHEMA,
    config,
    db,
    tables: { outbox: chatTables.outbox, processedEvents: chatTables.processedEvents },
    consumers: [],
  });
  return app;
}
