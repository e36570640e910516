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
  type ServiceApp,
} from '@vivier/service-kit';
import { CONSUMER_GROUPS, SUBSCRIPTIONS } from '@vivier/contracts';
import { combineHandlers, messagingPlugin, type ConsumerSpec, type Publish } from '@vivier/messaging';
import { createProviderRouter, providerMetricsHooks } from '@vivier/providers';
import { workerTables, WORKER_SCHEMA } from '@vivier/db-worker';
import { providersOf, type WorkerConfig } from './config';
import { CancelWatch } from './modules/completions/cancel-watch';
import { completionHandlers } from './modules/completions/completion.consumer';
import { titleHandlers } from './modules/titles/title.consumer';
import { summaryHandlers } from './modules/summaries/summary.consumer';
import { WorkerProviderSettings } from './modules/providers/provider-settings';
import { MaintenanceScheduler, purgeScheduleRunsJob, purgeFinishedJobsJob } from './modules/maintenance/maintenance.service';
import { exportHandlers } from './modules/exports/export.consumer';
import { expireExportsJob } from './modules/exports/export-expiry.service';

export interface BuildWorkerAppOptions {
  logStream?: DestinationStream;
  /** Run the Kafka consumers (default true); tests of maintenance alone turn them off. */
  consumers?: boolean;
  /** Run the maintenance scheduler (default true). */
  maintenance?: boolean;
  /** Environment for provider key variables named by the providers file (`apiKeyEnv`). */
  env?: NodeJS.ProcessEnv;
}

/** The worker service as an app without a socket: main.ts listens, tests use app.inject. */
export async function buildWorkerApp(config: WorkerConfig, options: BuildWorkerAppOptions = {}): Promise<ServiceApp> {
  const providers = providersOf(config, options.env);
  const app = await createServiceApp({ service: 'worker', logLevel: config.LOG_LEVEL, logStream: options.logStream });
  const pool = createPool({ url: config.DATABASE_URL, poolMax: config.DATABASE_POOL_MAX, applicationName: 'worker' });
  const db = createDatabase(pool, workerTables);
  const router = createProviderRouter(providers, providerMetricsHooks(app.metrics));
  closeStep(app, 'worker: provider router', () => router.close());
  await app.register(identityPlugin, { secret: config.INTERNAL_IDENTITY_SECRET });
  await app.register(databasePlugin, { pool });
  await app.register(redisPlugin, { redis: createRedis(config.REDIS_URL, { keyPrefix: config.REDIS_KEY_PREFIX, name: 'worker' }) });
  await app.register(objectStoragePlugin, { client: createS3(config), bucket: config.S3_BUCKET });

  const providerSettings = new WorkerProviderSettings({ db, redis: app.redis, router, base: providers, config, log: app.log });
  const cancels = new CancelWatch({ redis: app.redis, keyPrefix: config.REDIS_KEY_PREFIX, log: app.log });
  app.addHook('onReady', async () => {
    await providerSettings.start();
    cancels.start();
  });
  closeStep(
    app,
    'worker: settings and cancel watch',
    async () => {
      providerSettings.stop();
      cancels.stop();
    },
    'preClose',
  );

  // Handlers call providers and S3, so never applyInRuns: a failed run would call them again.
  const publish: Publish = (tx, events) => app.messaging.publish(tx, events);
  const consumers: ConsumerSpec[] = [];
  if (options.consumers ?? true) {
    const common = { router, publish, logger: app.log, maxAttempts: config.CONSUMER_RETRY_ATTEMPTS };
    consumers.push({
      group: CONSUMER_GROUPS.worker,
      topics: [...SUBSCRIPTIONS.worker],
      handlers: combineHandlers(
        providerSettings.handlers,
        completionHandlers({ ...common, db, leaseMs: config.COMPLETION_LEASE_MS, cancels }),
        titleHandlers({ ...common, titleModel: config.TITLE_MODEL, titleTimeoutMs: config.TITLE_TIMEOUT_MS }),
        summaryHandlers({
          ...common,
          metrics: app.metrics,
          chatUrl: config.CHAT_URL,
          internalSecret: config.INTERNAL_IDENTITY_SECRET,
          summaryModel: config.SUMMARY_MODEL,
          maxTokens: config.SUMMARY_MAX_TOKENS,
          timeoutMs: config.SUMMARY_TIMEOUT_MS,
        }),
        exportHandlers({
          db,
          s3: app.s3,
          publish,
          logger: app.log,
          chatUrl: config.CHAT_URL,
          internalSecret: config.INTERNAL_IDENTITY_SECRET,
          retentionHours: config.EXPORT_RETENTION_HOURS,
          maxAttempts: config.CONSUMER_RETRY_ATTEMPTS,
        }),
      ),
    });
  }
  await app.register(messagingPlugin, {
    service: 'worker',
    schema: WORKER_SCHEMA,
    config,
    db,
    tables: { outbox: workerTables.outbox, processedEvents: workerTables.processedEvents },
    consumers,
  });

  if (options.maintenance ?? true) {
    const scheduler = new MaintenanceScheduler({
      db,
      logger: app.log,
      pollMs: config.MAINTENANCE_POLL_MS,
      jobs: [
        purgeScheduleRunsJob({ intervalMs: config.MAINTENANCE_INTERVAL_MS, retentionHours: config.OUTBOX_RETENTION_HOURS }),
        purgeFinishedJobsJob({ intervalMs: config.MAINTENANCE_INTERVAL_MS, retentionHours: config.PROCESSED_EVENTS_RETENTION_HOURS }),
        expireExportsJob({ s3: app.s3, intervalMs: config.MAINTENANCE_INTERVAL_MS }),
      ],
    });
    app.addHook('onReady', async () => {
      await scheduler.start();
    });
    // preClose: before the pool closes. Waits for a maintenance run under way (purges, S3 deletes).
    closeStep(app, 'worker: maintenance scheduler', () => scheduler.stop(), 'preClose');
  }
  return app;
}
