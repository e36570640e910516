import { and, desc, eq, isNull, lt, or, type SQL } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { authTables } from '@vivier/db-auth';
import { createdAtMs, type Cursor } from '../../http.schema';

const { apiKeys, users } = authTables;

export type ApiKeyRow = typeof apiKeys.$inferSelect;

/** API keys (auth.api_keys). */
export function apiKeysRepository(db: Executor) {
  return {
    async insert(row: { userId: string; name: string; prefix: string; keyHash: string }, tx: Executor = db): Promise<ApiKeyRow> {
      const [inserted] = await tx.insert(apiKeys).values(row).returning();
      return inserted!;
    },

    async listActive(userId: string, limit: number, cursor: Cursor | undefined, tx: Executor = db): Promise<ApiKeyRow[]> {
      const conditions: SQL[] = [eq(apiKeys.userId, userId), isNull(apiKeys.revokedAt)];
      if (cursor) conditions.push(or(lt(createdAtMs(apiKeys.createdAt), cursor.createdAt), and(eq(createdAtMs(apiKeys.createdAt), cursor.createdAt), lt(apiKeys.id, cursor.id)))!);
      return tx
        .select()
        .from(apiKeys)
        .where(and(...conditions))
        .orderBy(desc(createdAtMs(apiKeys.createdAt)), desc(apiKeys.id))
        .limit(limit);
    },

    async byIdForUser(id: string, userId: string, tx: Executor = db): Promise<ApiKeyRow | undefined> {
      const rows = await tx.select().from(apiKeys).where(and(eq(apiKeys.id, id), eq(apiKeys.userId, userId)));
      return rows[0];
    },

    async revoke(id: string, at: Date, tx: Executor = db): Promise<boolean> {
      const rows = await tx.update(apiKeys).set({ revokedAt: at }).where(and(eq(apiKeys.id, id), isNull(apiKeys.revokedAt))).returning({ id: apiKeys.id });
      return rows.length > 0;
    },

    /** An active key by hash, with its owner's role and state. */
    async activeByHash(keyHash: string, tx: Executor = db) {
      const rows = await tx
        .select({ id: apiKeys.id, userId: apiKeys.userId, lastUsedAt: apiKeys.lastUsedAt, role: users.role, disabledAt: users.disabledAt })
        .from(apiKeys)
        .innerJoin(users, eq(users.id, apiKeys.userId))
        .where(and(eq(apiKeys.keyHash, keyHash), isNull(apiKeys.revokedAt)));
      return rows[0];
    },

    /** Records use, at most once per `staleBefore` window. */
    async touch(id: string, at: Date, staleBefore: Date, tx: Executor = db): Promise<void> {
      await tx
        .update(apiKeys)
        .set({ lastUsedAt: at })
        .where(and(eq(apiKeys.id, id), or(isNull(apiKeys.lastUsedAt), lt(apiKeys.lastUsedAt, staleBefore))));
    },
  };
}

export type ApiKeysRepository = ReturnType<typeof apiKeysRepository>;
