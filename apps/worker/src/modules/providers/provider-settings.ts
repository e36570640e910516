import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import { providerMasterKeys, ProviderSettingsSync, type ProviderRouter, type ProvidersConfig } from '@vivier/providers';
import { providerSettingsHandlers, providerSettingsRepository } from '@vivier/providers/store';
import type { EventHandlers, Executor } from '@vivier/messaging';
import { subscribeChannel } from '@vivier/service-kit';
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
  private subscription: { close: () => void } | undefined;

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
    this.subscription = subscribeChannel(this.deps.redis, {
      channel: this.channel,
      name: 'worker-providers',
      log: this.deps.log,
      onMessage: () => {
        this.sync.refresh().catch((error: unknown) => this.deps.log.warn({ err: error }, 'cannot apply the provider settings'));
      },
    });
  }

  stop(): void {
    this.sync.stop();
    this.subscription?.close();
    this.subscription = undefined;
  }
}
