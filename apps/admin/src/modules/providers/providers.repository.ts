import { asc, eq, isNotNull, ne, and, sql } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { adminTables } from '@vivier/db-admin';
import type { SealedApiKey } from './provider-keys.service';

const { providers } = adminTables;

export type ProviderRow = typeof providers.$inferSelect;
export type NewProviderRow = typeof providers.$inferInsert;

/** The stored API key of a row, or undefined when it has none. */
export function sealedKeyOf(row: ProviderRow): SealedApiKey | undefined {
  if (!row.apiKeyCiphertext || !row.apiKeyIv || !row.apiKeyTag || !row.dataKeyWrapped || !row.dataKeyIv || !row.dataKeyTag || !row.kekId) return undefined;
  return {
    kekId: row.kekId,
    dataKeyWrapped: row.dataKeyWrapped,
    dataKeyIv: row.dataKeyIv,
    dataKeyTag: row.dataKeyTag,
    apiKeyCiphertext: row.apiKeyCiphertext,
    apiKeyIv: row.apiKeyIv,
    apiKeyTag: row.apiKeyTag,
  };
}

const NO_KEY = {
  kekId: null,
  dataKeyWrapped: null,
  dataKeyIv: null,
  dataKeyTag: null,
  apiKeyCiphertext: null,
  apiKeyIv: null,
  apiKeyTag: null,
  apiKeyHint: null,
};

/** The key columns of a row for a sealed key (or none). */
export function keyColumns(sealed: SealedApiKey | undefined, hint: string | null): Pick<NewProviderRow, keyof typeof NO_KEY> {
  return sealed ? { ...sealed, apiKeyHint: hint } : NO_KEY;
}

/** admin.providers: provider settings set through the admin API. */
export function providersRepository(db: Executor) {
  return {
    async list(): Promise<ProviderRow[]> {
      return db.select().from(providers).orderBy(asc(providers.id));
    },

    async byId(id: string, tx: Executor = db): Promise<ProviderRow | undefined> {
      const [row] = await tx.select().from(providers).where(eq(providers.id, id));
      return row;
    },

    /**
     * The provider's row, locked for the transaction, or undefined when there is none yet. The
     * name is locked too: `for update` locks no row that does not exist, and two first saves of
     * one name would both be revision 1, their two events alike to chat and the worker.
     */
    async lock(id: string, tx: Executor): Promise<ProviderRow | undefined> {
      await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${`vivier-admin:provider:${id}`}, 0))`);
      const [row] = await tx.select().from(providers).where(eq(providers.id, id)).for('update');
      return row;
    },

    async upsert(row: NewProviderRow, tx: Executor): Promise<ProviderRow> {
      const { id: _id, createdAt: _createdAt, ...changes } = row;
      const [saved] = await tx.insert(providers).values(row).onConflictDoUpdate({ target: providers.id, set: changes }).returning();
      return saved!;
    },

    /** Ids of providers whose data key is wrapped by a master key other than `kekId`. */
    async wrappedByOtherKeys(kekId: string): Promise<string[]> {
      const rows = await db
        .select({ id: providers.id })
        .from(providers)
        .where(and(isNotNull(providers.kekId), ne(providers.kekId, kekId)));
      return rows.map((r) => r.id);
    },

    async updateKey(id: string, sealed: SealedApiKey, tx: Executor): Promise<void> {
      await tx.update(providers).set(sealed).where(eq(providers.id, id));
    },
  };
}
