import { EVENTS } from '@vivier/contracts';
import type { EventHandlers } from '@vivier/messaging';
import type { FastifyBaseLogger } from 'fastify';
import type { ProviderSettingsRepository } from './provider-settings.repository';

/**
 * `admin.events` `provider.configured`: the provider's whole configuration after the change,
 * stored in the consumer's transaction (a redelivery, or an older revision arriving late through
 * the retry topic, changes nothing). Once committed, `changed` makes every chat instance apply it.
 */
export function providerSettingsHandlers(deps: {
  settings: ProviderSettingsRepository;
  changed: () => Promise<void>;
  log: FastifyBaseLogger;
}): EventHandlers {
  return {
    [EVENTS.adminProviderConfigured.type]: async (event, { tx, afterCommit }) => {
      const d = event.data;
      const stored = await deps.settings.save(
        {
          providerId: d.providerId,
          kind: d.kind,
          enabled: d.enabled,
          baseUrl: d.baseUrl,
          models: d.models,
          routing: d.routing,
          apiKeyEnvelope: d.apiKeyEnvelope,
          revision: d.revision,
          updatedAt: new Date(event.time),
        },
        tx,
      );
      if (!stored) {
        deps.log.info({ provider: d.providerId, revision: d.revision }, 'provider settings older than the stored ones: ignored');
        return;
      }
      deps.log.info({ provider: d.providerId, revision: d.revision, enabled: d.enabled }, 'provider configured by an administrator');
      afterCommit(deps.changed);
    },
  };
}
