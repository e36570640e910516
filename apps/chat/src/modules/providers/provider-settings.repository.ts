import { lt, sql } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { chatTables } from '@vivier/db-chat';

const { providerSettings } = chatTables;

export type ProviderSettingsRow = typeof providerSettings.$inferSelect;

/** chat.provider_settings: the admin API's provider settings, one row per provider, last revision wins. */
export function providerSettingsRepository(db: Executor) {
  return {
    /** Stores `row` unless a row of the same or a later revision is there. True when it was stored. */
    async save(row: ProviderSettingsRow, tx: Executor = db): Promise<boolean> {
      const { providerId: _id, ...changes } = row;
      const stored = await tx
        .insert(providerSettings)
        .values(row)
        .onConflictDoUpdate({
          target: providerSettings.providerId,
          set: {
            ...changes,
            // jsonb columns from excluded, so the values are written once.
            models: sql`excluded.models`,
            routing: sql`excluded.routing`,
            apiKeyEnvelope: sql`excluded.api_key_envelope`,
          },
          where: lt(providerSettings.revision, row.revision),
        })
        .returning({ revision: providerSettings.revision });
      return stored.length === 1;
    },

    async all(tx: Executor = db): Promise<ProviderSettingsRow[]> {
      return tx.select().from(providerSettings).orderBy(providerSettings.providerId);
    },
  };
}

export type ProviderSettingsRepository = ReturnType<typeof providerSettingsRepository>;
