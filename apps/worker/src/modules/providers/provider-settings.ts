import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import { providerMasterKeys, ProviderSettingsSync, type ProviderRouter, type ProvidersConfig } from '@vivier/providers';
import { providerSettingsHandlers, providerSettingsRepository } from '@vivier/providers/store';
import type { EventHandlers, Executor } from '@vivier/messaging';
import { workerTables } from '@vivier/db-worker';
import type { WorkerConfig } from '../../config';

/**
 * Provider settings from the admin API for the jobs' provider calls, as chat applies them: the
 * instance that consumes `provider.configured` stores it in worker.provider_settings, then every
 * instance re-reads the table, at once on a Redis message and every PROVIDER_SETTINGS_POLL_MS.
 */
export class WorkerProviderSettings {
  readonly handlers: EventHandlers;
  private readonly sync: ProviderSettingsSync;
  private readonly channel: string;
  private subscriber: Redis | undefined;

  constructor(
    private readonly deps: { db: Executor; redis: Redis; router: ProviderRouter; base: ProvidersConfig; config: WorkerConfig; log: FastifyBaseLogger },
  ) {
    const settings = providerSettingsRepository(deps.db, workerTables.providerSettings);
    this.channel = `${deps.config.REDIS_KEY_PREFIX}worker:providers`;
    this.sync = new ProviderSettingsSync({
      load: () => settings.all(),
      router: deps.router,
      base: deps.base,
      masterKeys: providerMasterKeys(deps.config),
      notify: async () => void (await deps.redis.publish(this.channel, 'changed')),
      pollMs: deps.config.PROVIDER_SETTINGS_POLL_MS,
      log: deps.log,
    });
    this.handlers = providerSettingsHandlers({ settings, changed: () => this.sync.changed(), log: deps.log });
  }

  /** Applies the stored settings, then follows the other instances' changes. */
  async start(): Promise<void> {
    await this.sync.start();
    const subscriber = this.deps.redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null, connectionName: 'worker-subscriber' });
    this.subscriber = subscriber;
    subscriber.on('error', (error: Error) => this.deps.log.debug({ err: error }, 'redis subscriber error'));
    subscriber.on('message', () => {
      this.sync.refresh().catch((error: unknown) => this.deps.log.warn({ err: error }, 'cannot apply the provider settings'));
    });
    // SUBSCRIBE only once ready: sent during ioredis' ready check it makes the connection drop.
    const subscribe = () => subscriber.subscribe(this.channel).catch((error: unknown) => this.deps.log.warn({ err: error }, 'cannot subscribe the provider channel'));
    if (subscriber.status === 'ready') void subscribe();
    else subscriber.once('ready', () => void subscribe());
  }

  stop(): void {
    this.sync.stop();
    this.subscriber?.disconnect();
    this.subscriber = undefined;
  }
}
