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
  closeStep,
  timedStep,
  type ServiceApp,
} from '@vivier/service-kit';
import { CONSUMER_GROUPS, SUBSCRIPTIONS } from '@vivier/contracts';
import { createPublisher, messagingPlugin, type ConsumerSpec } from '@vivier/messaging';
import { createProviderRouter, loadTokenizer, providerMasterKeys, ProviderSettingsSync } from '@vivier/providers';
import { providerSettingsHandlers, providerSettingsRepository } from '@vivier/providers/store';
import { chatTables, CHAT_SCHEMA } from '@vivier/db-chat';
import { providersOf, uploadTypesOf, type ChatConfig } from './config';
import { circuitGauge, createChatMetrics, routerHooks, type ChatMetrics } from './metrics';
import { ResponseCache } from './modules/cache/response-cache.service';
import { chatsRoutes } from './modules/chats/chats.routes';
import { ChatsService } from './modules/chats/chats.service';
import { titleHandlers } from './modules/chats/chats.consumer';
import { SummariesService } from './modules/summaries/summaries.service';
import { summariesInternalRoutes } from './modules/summaries/summaries.routes';
import { completionHandlers } from './modules/completions/completions.consumer';
import { exportHandlers } from './modules/exports/exports.consumer';
import { exportsInternalRoutes, exportsRoutes } from './modules/exports/exports.routes';
import { ExportsService } from './modules/exports/exports.service';
import { ContextBuilder } from './modules/context/context.service';
import { filesRoutes } from './modules/files/files.routes';
import { FilesService } from './modules/files/files.service';
import { messagesRoutes } from './modules/messages/messages.routes';
import { MessagesService } from './modules/messages/messages.service';
import { poolRunner, turnsRepository } from './modules/messages/turns.repository';
import { modelsRoutes } from './modules/models/models.routes';
import { openAiRoutes } from './modules/openai/openai.routes';
import { OpenAiService } from './modules/openai/openai.service';
import { ModelCatalog } from './modules/models/models.service';
import { quotaHandlers } from './modules/quotas/quotas.consumer';
import { quotasRepository } from './modules/quotas/quotas.repository';
import { ReplyHub } from './modules/replies/reply-hub.service';
import { ReplyReplay } from './modules/replies/reply-replay.service';
import { ReplyRunner } from './modules/replies/reply-runner.service';
import { QUEUED_CANCEL_FLAG_MS, ReplyStreams } from './modules/replies/reply-streams.service';
import { ReplySweeper } from './modules/replies/reply-sweeper.service';
import { QuotaHolders } from './modules/quotas/quota-holders';
import { searchRoutes } from './modules/search/search.routes';

export interface BuildChatAppOptions {
  logStream?: DestinationStream;
  /**
   * Run the consumers (`admin.events` quotas and providers, `worker.events` completions, titles and exports;
   * default true). Tests that do not exercise them turn them off so that many short-lived apps
   * do not keep rebalancing the `chat` consumer group.
   */
  consumers?: boolean;
  /** Where provider keys named by the providers file (`apiKeyEnv`) are read; process.env by default. */
  env?: NodeJS.ProcessEnv;
}

declare module 'fastify' {
  interface FastifyInstance {
    chat: {
      runner: ReplyRunner;
      sweeper: ReplySweeper;
      models: ModelCatalog;
      metrics: ChatMetrics;
      holders: QuotaHolders;
    };
  }
}

/** The chat service as an app without a socket: main.ts listens, tests use app.inject. */
export async function buildChatApp(config: ChatConfig, options: BuildChatAppOptions = {}): Promise<ServiceApp> {
  const providers = providersOf(config, options.env);
  const app = await createServiceApp({ service: 'chat', logLevel: config.LOG_LEVEL, logStream: options.logStream });
  const pool = createPool({ url: config.DATABASE_URL, poolMax: config.DATABASE_POOL_MAX, applicationName: 'chat' });
  const db = createDatabase(pool, chatTables);
  await app.register(identityPlugin, { secret: config.INTERNAL_IDENTITY_SECRET });
  await app.register(databasePlugin, { pool });
  await app.register(redisPlugin, { redis: createRedis(config.REDIS_URL, { keyPrefix: config.REDIS_KEY_PREFIX, name: 'chat' }) });
  await app.register(objectStoragePlugin, { client: createS3(config), bucket: config.S3_BUCKET });

  const metrics = createChatMetrics(app.metrics);
  const router = createProviderRouter(providers, routerHooks(() => metrics, app.metrics));
  circuitGauge(app.metrics, () => router);
  const models = new ModelCatalog(router, config.CHAT_DEFAULT_MODEL);
  const publish = createPublisher(chatTables.outbox);
  const streams = new ReplyStreams(
    app.redis,
    {
      keyPrefix: config.REDIS_KEY_PREFIX,
      maxEvents: config.CHAT_STREAM_MAX_EVENTS,
      retentionSeconds: config.CHAT_STREAM_RETENTION_SECONDS,
      // A running reply's journal outlives any reply (the router's budget caps those) by the retention.
      runningTtlSeconds: 3600 + config.CHAT_STREAM_RETENTION_SECONDS,
      leaseMs: config.CHAT_REPLY_LEASE_MS,
    },
    app.log,
  );
  const hub = new ReplyHub(app.redis, streams, app.log);
  // Provider settings from the admin API: stored by whichever instance consumes them, then applied
  // by every instance (told through Redis, and re-read every PROVIDER_SETTINGS_POLL_MS).
  const providerSettings = providerSettingsRepository(db, chatTables.providerSettings);
  const providersChannel = `${config.REDIS_KEY_PREFIX}chat:providers`;
  const providerSync = new ProviderSettingsSync({
    load: () => providerSettings.all(),
    router,
    base: providers,
    masterKeys: providerMasterKeys(config),
    notify: async () => void (await app.redis.publish(providersChannel, 'changed')),
    pollMs: config.PROVIDER_SETTINGS_POLL_MS,
    log: app.log,
  });
  hub.handle(providersChannel, () => {
    providerSync.refresh().catch((error: unknown) => app.log.warn({ err: error }, 'cannot apply the provider settings'));
  });
  const cache = new ResponseCache(app.redis, config.CHAT_RESPONSE_CACHE_TTL_SECONDS, metrics, app.log);
  const sql = poolRunner(pool);
  const turns = turnsRepository(sql);
  const runner = new ReplyRunner({ db, sql, router, streams, cache, metrics, log: app.log, leaseMs: config.CHAT_REPLY_LEASE_MS });
  const sweeper = new ReplySweeper({
    db,
    sql,
    streams,
    runner,
    log: app.log,
    leaseMs: config.CHAT_REPLY_LEASE_MS,
    intervalMs: config.CHAT_SWEEP_INTERVAL_MS,
    partitionMonthsAhead: config.CHAT_PARTITION_MONTHS_AHEAD,
  });
  const replay = new ReplyReplay({ db, runner, hub, streams, log: app.log });
  const files = new FilesService({ db, s3: app.s3, maxBytes: config.CHAT_UPLOAD_MAX_BYTES, allowedTypes: uploadTypesOf(config), log: app.log });
  const chats = new ChatsService({
    db,
    publish,
    models,
    cancelReplies: async (replies) => {
      for (const { id: messageId, queued } of replies) {
        if (!queued && runner.cancelLocal(messageId)) continue;
        // A queued reply's job may come up at the worker much later: its flag lasts as a cancel's does.
        await streams
          .publishCancel(messageId, queued ? QUEUED_CANCEL_FLAG_MS : undefined)
          .catch((error: unknown) => app.log.warn({ err: error, messageId }, 'cannot relay a cancel through Redis'));
      }
    },
  });
  const exportsService = new ExportsService({
    db,
    publish,
    s3: app.s3,
    signer: config.S3_PUBLIC_ENDPOINT ? createS3({ ...config, S3_ENDPOINT: config.S3_PUBLIC_ENDPOINT }) : app.s3.client,
    urlTtlSeconds: config.CHAT_EXPORT_URL_TTL_SECONDS,
  });
  const messages = new MessagesService({
    db,
    turns,
    chats,
    models,
    files,
    context: new ContextBuilder({ turns, files }),
    cache,
    runner,
    streams,
    sweeper,
    metrics,
    log: app.log,
    maxOutputTokens: config.CHAT_MAX_OUTPUT_TOKENS,
  });

  const summaries = new SummariesService({ turns, files, log: app.log });

  const consumers: ConsumerSpec[] =
    options.consumers === false
      ? []
      : [
          {
            group: CONSUMER_GROUPS.chat,
            topics: [...SUBSCRIPTIONS.chat],
            handlers: {
              ...quotaHandlers({ quotas: quotasRepository(db), log: app.log }),
              ...providerSettingsHandlers({ settings: providerSettings, changed: () => providerSync.changed(), log: app.log }),
              ...completionHandlers({ streams, log: app.log }),
              ...titleHandlers({ log: app.log }),
              ...summaries.handlers(),
              ...exportHandlers({ log: app.log }),
            },
          },
        ];
  await app.register(messagingPlugin, {
    service: 'chat',
    schema: CHAT_SCHEMA,
    config,
    db,
    tables: { outbox: chatTables.outbox, processedEvents: chatTables.processedEvents },
    consumers,
  });

  await app.register(modelsRoutes, { models });
  await app.register(searchRoutes, { db });
  await app.register(chatsRoutes, { chats });
  await app.register(messagesRoutes, { messages, replay, heartbeatMs: config.CHAT_SSE_HEARTBEAT_SECONDS * 1000 });
  await app.register(filesRoutes, { files, maxBytes: config.CHAT_UPLOAD_MAX_BYTES });
  await app.register(exportsRoutes, { exports: exportsService });
  await app.register(exportsInternalRoutes, { exports: exportsService });
  await app.register(summariesInternalRoutes, { summaries });
  const holders = new QuotaHolders({
    sql,
    log: app.log,
    timeoutMs: config.CHAT_QUOTA_HOLDER_TIMEOUT_MS,
    intervalMs: config.CHAT_SWEEP_INTERVAL_MS,
    onRevived: () => openai.returnLeases(), // called only once started, after `openai` exists
  });
  const openai = new OpenAiService({ turns, router, models, metrics, maxOutputTokens: config.CHAT_MAX_OUTPUT_TOKENS, settleLingerMs: config.CHAT_USAGE_SETTLE_LINGER_MS, leaseRequests: config.CHAT_QUOTA_LEASE_REQUESTS, holder: () => holders.id, log: app.log });
  await app.register(openAiRoutes, { openai });
  app.decorate('chat', { runner, sweeper, models, metrics, holders });

  app.addHook('onReady', async () => {
    // Partitions first (inserts need them); the tokenizer is loaded, and the providers set through
    // the admin API applied, before the first message.
    await Promise.all([sweeper.start(), holders.start(), loadTokenizer(), providerSync.start()]);
    // The models of Ollama and OpenAI-compatible servers, then every discoveryIntervalMs. Ready
    // waits up to a second for the first list (a local server answers well within it), so that
    // the first /models and the default model of an Ollama-only deployment include them.
    const discovered = router.startDiscovery((results) => {
      for (const r of results)
        if (r.error) app.log.warn({ provider: r.provider, reason: r.error.message }, 'cannot list the models of a provider; its listed models stay as they were');
    });
    await Promise.race([discovered, new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
    models.assertDefaultServed();
    hub.start((messageId) => runner.cancelLocal(messageId));
  });
  closeStep(
    app,
    'chat: running replies',
    async () => {
      // Replies outlive their HTTP requests: let the running ones end (and be stored) first.
      await runner.drain(Math.floor(config.SHUTDOWN_TIMEOUT_MS / 2));
      await sweeper.stop();
      providerSync.stop();
    },
    'preClose',
  );
  closeStep(app, 'chat', async () => {
    // The requests have ended; the settlements they left run on until written (the pool closes after).
    await timedStep(app, 'chat: OpenAI API settlements', () => openai.drain());
    await timedStep(app, 'chat: quota holder', () => holders.stop());
    await hub.close();
    await router.close();
  });
  return app;
}
