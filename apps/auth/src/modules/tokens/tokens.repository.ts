import { and, desc, eq, gt, isNull, lt, ne, or, sql } from 'drizzle-orm';
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

    async active(tx: Executor = db): Promise<SigningKeyRow | undefined> {
      const rows = await tx.select().from(signingKeys).where(isNull(signingKeys.retiredAt)).orderBy(desc(signingKeys.createdAt)).limit(1);
      return rows[0];
    },

    async insert(row: typeof signingKeys.$inferInsert, tx: Executor = db): Promise<void> {
      await tx.insert(signingKeys).values(row);
    },

    /** Retires every active key but `kid`; drops keys retired before `forgetBefore`. */
    async retireOthers(kid: string, at: Date, forgetBefore: Date, tx: Executor = db): Promise<void> {
      await tx.update(signingKeys).set({ retiredAt: at }).where(and(isNull(signingKeys.retiredAt), ne(signingKeys.kid, kid)));
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
