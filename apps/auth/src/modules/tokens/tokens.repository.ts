import { and, desc, eq, gt, isNull, lt, lte, ne, or, sql } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { authTables } from '@vivier/db-auth';

const { signingKeys } = authTables;

export type SigningKeyRow = typeof signingKeys.$inferSelect;

/** JWT signing keys (auth.signing_keys). */
export function signingKeysRepository(db: Executor) {
  return {
    /** Keys whose tokens may still be alive: the active ones and those retired after `retiredAfter`, newest first. */
    async listVerifiable(retiredAfter: Date, tx: Executor = db): Promise<SigningKeyRow[]> {
      return tx
        .select()
        .from(signingKeys)
        .where(or(isNull(signingKeys.retiredAt), gt(signingKeys.retiredAt, retiredAfter)))
        .orderBy(desc(signingKeys.createdAt));
    },

    /** The key that signs now: activated, not yet retired, the most recently activated. */
    async active(tx: Executor = db): Promise<SigningKeyRow | undefined> {
      const rows = await tx
        .select()
        .from(signingKeys)
        .where(and(lte(signingKeys.activatesAt, sql`now()`), or(isNull(signingKeys.retiredAt), gt(signingKeys.retiredAt, sql`now()`))))
        .orderBy(desc(signingKeys.activatesAt))
        .limit(1);
      return rows[0];
    },

    /** A key published ahead of its activation, if one is waiting. */
    async pending(tx: Executor = db): Promise<SigningKeyRow | undefined> {
      const rows = await tx.select().from(signingKeys).where(and(gt(signingKeys.activatesAt, sql`now()`), isNull(signingKeys.retiredAt))).limit(1);
      return rows[0];
    },

    async insert(row: typeof signingKeys.$inferInsert, tx: Executor = db): Promise<void> {
      await tx.insert(signingKeys).values(row);
    },

    /**
     * Retires at `at` every key but `kid` not retired by then (a waiting key included); drops keys
     * retired before `forgetBefore`.
     */
    async retireOthers(kid: string, at: Date, forgetBefore: Date, tx: Executor = db): Promise<void> {
      await tx
        .update(signingKeys)
        .set({ retiredAt: at })
        .where(and(or(isNull(signingKeys.retiredAt), gt(signingKeys.retiredAt, at)), ne(signingKeys.kid, kid)));
      await tx.delete(signingKeys).where(lt(signingKeys.retiredAt, forgetBefore));
    },

    /** Serializes key creation between instances for the rest of the transaction. */
    async lock(tx: Executor): Promise<void> {
      await tx.execute(sql`select pg_advisory_xact_lock(hashtext('vivier-auth:signing-keys'))`);
    },

    async byKid(kid: string, tx: Executor = db): Promise<SigningKeyRow | undefined> {
      const rows = await tx.select().from(signingKeys).where(eq(signingKeys.kid, kid));
      return rows[0];
    },
  };
}

export type SigningKeysRepository = ReturnType<typeof signingKeysRepository>;
