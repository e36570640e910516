// Where a service keeps the admin API's provider settings (`provider.configured`), in its own
// schema: the table, its two statements, and the event handler that fills it.
import { lt, sql } from 'drizzle-orm';
import { boolean, integer, jsonb, text, timestamp, type PgSchema } from 'drizzle-orm/pg-core';
import { EVENTS, PROVIDER_KINDS, type AdminProviderConfiguredData, type EncryptedSecret } from '@vivier/contracts';
import type { EventHandlers, Executor } from '@vivier/messaging';
import type { StoredProviderSettings, SyncLogger } from './provider-settings-sync.js';

/**
 * Provider settings made through the admin API, as the last `provider.configured` of each provider
 * said them (a row changes only for a higher `revision`). The API key stays as it travelled,
 * sealed under the master key; it is opened in memory when the router is configured.
 */
export function providerSettingsTable(schema: PgSchema) {
  return schema.table('provider_settings', {
    providerId: text('provider_id').primaryKey(),
    kind: text('kind', { enum: PROVIDER_KINDS }).notNull(),
    enabled: boolean('enabled').notNull(),
    baseUrl: text('base_url'),
    models: jsonb('models').$type<string[]>().notNull(),
    routing: jsonb('routing').$type<AdminProviderConfiguredData['routing']>().notNull(),
    apiKeyEnvelope: jsonb('api_key_envelope').$type<EncryptedSecret>(),
    revision: integer('revision').notNull(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull(),
  });
}

export type ProviderSettingsTable = ReturnType<typeof providerSettingsTable>;
export type ProviderSettingsRow = ProviderSettingsTable['$inferSelect'];

export function providerSettingsRepository(db: Executor, table: ProviderSettingsTable) {
  return {
    /** Stores `row` unless a row of the same or a later revision is there. True when it was stored. */
    async save(row: ProviderSettingsRow, tx: Executor = db): Promise<boolean> {
      const stored = await tx
        .insert(table)
        .values(row)
        .onConflictDoUpdate({
          target: table.providerId,
          set: {
            kind: sql`excluded.kind`,
            enabled: sql`excluded.enabled`,
            baseUrl: sql`excluded.base_url`,
            models: sql`excluded.models`,
            routing: sql`excluded.routing`,
            apiKeyEnvelope: sql`excluded.api_key_envelope`,
            revision: sql`excluded.revision`,
            updatedAt: sql`excluded.updated_at`,
          },
          where: lt(table.revision, row.revision),
        })
        .returning({ revision: table.revision });
      return stored.length === 1;
    },

    async all(tx: Executor = db): Promise<StoredProviderSettings[]> {
      return tx.select().from(table).orderBy(table.providerId);
    },
  };
}

export type ProviderSettingsRepository = ReturnType<typeof providerSettingsRepository>;

/**
 * `admin.events` `provider.configured`: the provider's whole configuration after the change,
 * stored in the consumer's transaction (a redelivery, or an older revision arriving late through
 * the retry topic, changes nothing). Once committed, `changed` makes every instance apply it.
 */
export function providerSettingsHandlers(deps: {
  settings: ProviderSettingsRepository;
  changed: () => Promise<void>;
  log: Pick<SyncLogger, 'info'>;
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
