import type { FastifyBaseLogger } from 'fastify';
import { HttpProblem, problems } from '@vivier/service-kit';
import { EVENTS, createEvent, type AdminActor, type EncryptedSecret } from '@vivier/contracts';
import type { Executor, Publish } from '@vivier/messaging';
import { assertSafeProviderUrl, UnsafeProviderUrlError, type HostResolver } from '@vivier/providers';
import type { ProviderRouting } from '@vivier/db-admin';
import type { AuditService } from '../audit/audit.service';
import type { ProviderKeyVault } from './provider-keys.service';
import { keyColumns, sealedKeyOf, type ProviderRow, type providersRepository } from './providers.repository';

export type ProviderKind = 'openai' | 'anthropic' | 'gemini' | 'ollama' | 'openai_compatible';

export interface ProviderSettings {
  kind: ProviderKind;
  enabled?: boolean;
  baseUrl?: string | null;
  models?: string[];
  routing?: Partial<ProviderRouting>;
  /** Write-only: a new key; null removes it; absent keeps the stored one. */
  apiKey?: string | null;
}

export interface ProviderView {
  name: string;
  kind: ProviderKind;
  enabled: boolean;
  baseUrl: string | null;
  models: string[];
  routing: ProviderRouting;
  hasApiKey: boolean;
  /** The key's last four characters (keys of 16 characters or more), to recognise it. */
  apiKeyLast4: string | null;
  revision: number;
  createdAt: string;
  updatedAt: string;
  updatedBy: string;
}

export const DEFAULT_ROUTING: ProviderRouting = { weight: 1, timeoutMs: 60_000, maxRetries: 2, fallbacks: [] };

export function providerView(row: ProviderRow): ProviderView {
  return {
    name: row.id,
    kind: row.kind as ProviderKind,
    enabled: row.enabled,
    baseUrl: row.baseUrl,
    models: row.models,
    routing: row.routing,
    hasApiKey: row.apiKeyCiphertext !== null,
    apiKeyLast4: row.apiKeyHint,
    revision: row.revision,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
    updatedBy: row.updatedBy,
  };
}

/**
 * Provider routing settings and API keys. A PUT stores the whole configuration of a provider and
 * publishes it as `provider.configured` (the full state, `revision` + 1) in one transaction;
 * chat and the worker apply it without a restart. Keys are write-only: sealed with envelope encryption at rest
 * (ProviderKeyVault), encrypted under the master key on the event, never returned or logged.
 * Base URLs are checked against SSRF when saved (PROVIDER_ALLOWED_HOSTS lets private hosts in).
 */
/** `provider.configured` of a stored row: its whole state at its revision, at the time of that revision. */
function configuredEvent(actor: AdminActor, row: ProviderRow, apiKeyEnvelope: EncryptedSecret | null) {
  return createEvent(
    EVENTS.adminProviderConfigured,
    {
      actor,
      providerId: row.id,
      kind: row.kind as ProviderKind,
      enabled: row.enabled,
      baseUrl: row.baseUrl,
      models: row.models,
      routing: row.routing,
      apiKeyEnvelope,
      revision: row.revision,
    },
    { time: row.updatedAt },
  );
}

export class ProvidersService {
  constructor(
    private readonly deps: {
      db: Executor;
      repository: ReturnType<typeof providersRepository>;
      vault: ProviderKeyVault;
      publish: Publish;
      audit: AuditService;
      allowedHosts: string[];
      log: FastifyBaseLogger;
      /** DNS for the SSRF check (tests may pin it); the system resolver by default. */
      resolve?: HostResolver;
    },
  ) {}

  async list(): Promise<ProviderView[]> {
    return (await this.deps.repository.list()).map(providerView);
  }

  async get(name: string): Promise<ProviderView> {
    const row = await this.deps.repository.byId(name);
    if (!row) throw problems.notFound('No such provider.');
    return providerView(row);
  }

  async put(actor: AdminActor, name: string, settings: ProviderSettings): Promise<{ provider: ProviderView; created: boolean }> {
    const { db, repository, vault, publish, audit } = this.deps;
    const baseUrl = settings.baseUrl ?? null;
    if (settings.kind === 'openai_compatible' && !baseUrl) {
      throw problems.validation('An openai_compatible provider needs a baseUrl.', [{ path: 'body/baseUrl', message: 'is required for openai_compatible' }]);
    }
    const routing: ProviderRouting = { ...DEFAULT_ROUTING, ...settings.routing };
    if (routing.fallbacks.includes(name)) {
      throw problems.validation('A provider cannot fall back to itself.', [{ path: 'body/routing/fallbacks', message: 'must not name the provider itself' }]);
    }
    if (baseUrl) await this.assertSafe(baseUrl);

    const result = await db.transaction(async (tx) => {
      const existing = await repository.lock(name, tx);
      let sealed = existing ? sealedKeyOf(existing) : undefined;
      let hint = existing?.apiKeyHint ?? null;
      let clearKey: string | undefined;
      if (settings.apiKey === null) {
        sealed = undefined;
        hint = null;
      } else if (settings.apiKey !== undefined) {
        clearKey = settings.apiKey;
        sealed = vault.seal(name, clearKey);
        hint = clearKey.length >= 16 ? clearKey.slice(-4) : null;
      } else if (sealed) {
        // The stored key goes only where it went before: sent elsewhere (another address, another
        // vendor's protocol), a caller who never saw it would have it. A new place needs it again.
        if (existing && (existing.kind !== settings.kind || existing.baseUrl !== baseUrl)) {
          throw problems.conflict(
            'api_key_required',
            'The provider gets a new baseUrl or kind: send apiKey again (or null to remove it). A stored key is not sent to a new address.',
          );
        }
        try {
          clearKey = vault.open(name, sealed);
        } catch {
          // Wrapped with a master key that is no longer configured, or tampered with.
          throw problems.conflict('api_key_unreadable', 'The stored API key cannot be decrypted with the configured master keys; send apiKey again (or null to remove it).');
        }
        if (vault.needsRewrap(sealed)) sealed = vault.rewrap(name, sealed);
      }
      const envelope: EncryptedSecret | null = clearKey === undefined ? null : vault.eventSecret(name, clearKey);
      clearKey = undefined;

      const now = new Date();
      const row = await repository.upsert(
        {
          id: name,
          kind: settings.kind,
          enabled: settings.enabled ?? true,
          baseUrl,
          models: settings.models ?? [],
          routing,
          ...keyColumns(sealed, hint),
          revision: (existing?.revision ?? 0) + 1,
          updatedAt: now,
          updatedBy: actor.userId,
        },
        tx,
      );
      const event = configuredEvent(actor, row, envelope);
      await publish(tx, event);
      await audit.record([event], tx);
      return { provider: providerView(row), created: existing === undefined };
    });
    this.deps.log.info({ provider: name, revision: result.provider.revision, hasApiKey: result.provider.hasApiKey }, 'provider configured');
    return result;
  }

  /**
   * Publishes every provider's current settings again, as `provider.configured` at its current
   * revision (the actor and time of that revision; the API key under a fresh event envelope), one
   * transaction per provider with its row locked, so a change saved meanwhile is published after.
   * Chat and the worker keep a row unless the revision is higher, so for them it changes nothing,
   * except where the settings are missing: a database restored or created after the event left
   * Kafka's retention, or a service that did not keep them before. The audit log keeps one record
   * per revision (auditHandlers). Run at start and daily (app.ts); returns how many were published.
   */
  async republish(): Promise<number> {
    const { db, repository, vault, publish, log } = this.deps;
    let published = 0;
    for (const { id } of await repository.list()) {
      await db.transaction(async (tx) => {
        const row = await repository.lock(id, tx);
        if (!row) return;
        const sealed = sealedKeyOf(row);
        let envelope: EncryptedSecret | null = null;
        if (sealed) {
          let clearKey: string | undefined;
          try {
            clearKey = vault.open(id, sealed);
          } catch {
            // Without its key the event would tell a service that has none that there is none.
            log.error({ provider: id }, 'provider not republished: its stored API key cannot be decrypted with the configured master keys');
            return;
          }
          envelope = vault.eventSecret(id, clearKey);
          clearKey = undefined;
        }
        await publish(tx, configuredEvent({ userId: row.updatedBy }, row, envelope));
        published += 1;
      });
    }
    if (published > 0) log.info({ providers: published }, 'provider settings republished');
    return published;
  }

  /**
   * Data keys still wrapped by an earlier master key (PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS) are
   * re-wrapped with the current one; the API keys' ciphertexts do not change. Safe on several
   * replicas at once (row locks, re-checked).
   */
  async rewrapDataKeys(): Promise<number> {
    const { db, repository, vault } = this.deps;
    let rewrapped = 0;
    for (const id of await repository.wrappedByOtherKeys(vault.keyId)) {
      try {
        await db.transaction(async (tx) => {
          const row = await repository.lock(id, tx);
          const sealed = row ? sealedKeyOf(row) : undefined;
          if (!sealed || !vault.needsRewrap(sealed)) return;
          await repository.updateKey(id, vault.rewrap(id, sealed), tx);
          rewrapped += 1;
        });
      } catch (error) {
        // Not fatal: the provider keeps working in chat; saving it with its key again repairs it.
        this.deps.log.error({ provider: id, reason: (error as Error).message }, 'provider data key could not be re-wrapped');
      }
    }
    if (rewrapped > 0) this.deps.log.info({ providers: rewrapped }, 'provider data keys re-wrapped with the current master key');
    return rewrapped;
  }

  private async assertSafe(url: string): Promise<void> {
    try {
      await assertSafeProviderUrl(url, this.deps.allowedHosts, this.deps.resolve ? { resolve: this.deps.resolve } : {});
    } catch (error) {
      if (error instanceof UnsafeProviderUrlError) {
        throw new HttpProblem(400, 'unsafe_provider_url', `The base URL is refused: ${error.reason}.`, { extensions: { errors: [{ path: 'body/baseUrl', message: error.reason }] } });
      }
      throw error;
    }
  }
}
