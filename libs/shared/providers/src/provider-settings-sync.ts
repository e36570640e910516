// Keeps a service's router on the provider settings made through the admin API, which the service
// stores from `provider.configured` in its own schema.
import type { EncryptedSecret } from '@vivier/contracts';
import { openEventSecret } from './provider-key-secrets.js';
import type { ProviderRouter } from './provider-router.js';
import { applyProviderSettings, type ProviderSettings } from './provider-settings.js';
import type { ProvidersConfig } from './providers-config.js';

/** A provider's settings as stored from its last `provider.configured`: the API key still sealed. */
export type StoredProviderSettings = Omit<ProviderSettings, 'apiKey'> & { apiKeyEnvelope: EncryptedSecret | null };

/** The part of a pino logger the sync writes to. */
export interface SyncLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

export interface ProviderSettingsSyncOptions {
  /** Every stored provider's settings (the service's own table). */
  load: () => Promise<StoredProviderSettings[]>;
  router: ProviderRouter;
  /** The configuration the service started with (environment and providers file). */
  base: ProvidersConfig;
  /** PROVIDER_KEY_ENCRYPTION_KEY, then its previous values: the keys that open the API keys. */
  masterKeys: string[];
  /** Tells the service's other instances to refresh() (a Redis message, say). */
  notify: () => Promise<void>;
  /** How often the stored settings are read again, should a notification have been missed. */
  pollMs: number;
  log: SyncLogger;
}

/**
 * Keeps the router on the admin API's provider settings: reads them at start, whenever an instance
 * stored a change (notify → refresh), and every `pollMs`; applies them over the start configuration
 * when they differ from what is applied. API keys are opened in memory only.
 */
export class ProviderSettingsSync {
  private applied = '';
  private running: Promise<void> | undefined;
  private again = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: ProviderSettingsSyncOptions) {}

  /** Applies the stored settings (start() must succeed: a router on stale settings would be wrong). */
  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => {
      this.refresh().catch((error: unknown) => this.options.log.warn({ err: error }, 'cannot read the provider settings'));
    }, this.options.pollMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** A change was stored here: apply it, and tell the other instances. */
  async changed(): Promise<void> {
    try {
      await this.refresh();
    } finally {
      await this.options.notify();
    }
  }

  /** Reads the settings and applies them if they changed. Calls during a run make one more run. */
  refresh(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.again = false;
          await this.load();
        } while (this.again);
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  private async load(): Promise<void> {
    const { router, base, log } = this.options;
    const rows = await this.options.load();
    const fingerprint = rows.map((r) => `${r.providerId}@${r.revision}`).join(',');
    if (fingerprint === this.applied) return;
    const opened: ProviderSettings[] = [];
    for (const row of rows) {
      const setting = this.open(row);
      if (setting) opened.push(setting);
    }
    const { config, skipped } = applyProviderSettings(base, opened);
    for (const s of skipped) log.warn({ provider: s.providerId, reason: s.reason }, 'provider settings not applied');
    await router.reconfigure(config);
    this.applied = fingerprint;
    log.info(
      { providers: rows.map((r) => ({ provider: r.providerId, revision: r.revision, enabled: r.enabled })), enabled: router.enabledProviders() },
      'provider settings applied',
    );
  }

  /** The row with its key opened; undefined (the provider keeps its start configuration) when it cannot be. */
  private open(row: StoredProviderSettings): ProviderSettings | undefined {
    let apiKey: string | null = null;
    if (row.apiKeyEnvelope) {
      try {
        apiKey = openEventSecret(this.options.masterKeys, row.providerId, row.apiKeyEnvelope);
      } catch (error) {
        this.options.log.error(
          { provider: row.providerId, revision: row.revision, keyId: row.apiKeyEnvelope.keyId, reason: (error as Error).message },
          'the API key of the provider settings cannot be opened (is PROVIDER_KEY_ENCRYPTION_KEY the one admin uses?): settings not applied',
        );
        return undefined;
      }
    }
    const { apiKeyEnvelope: _sealed, ...settings } = row;
    return { ...settings, apiKey };
  }
}
