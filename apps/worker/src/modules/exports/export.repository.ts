import { and, eq, inArray, lt, notInArray, sql } from 'drizzle-orm';
import { workerTables } from '@vivier/db-worker';
import type { Executor } from '@vivier/messaging';
import type { WorkerDatabase } from '../worker-db';

const { exports } = workerTables;

/** worker.exports: one row per export id, its object and its outcome. */
export function exportRepository(db: WorkerDatabase) {
  return {
    /** Committed on its own: records the export and returns its state. */
    async begin(exportId: string, userId: string) {
      await db.insert(exports).values({ exportId, userId, state: 'started' }).onConflictDoNothing();
      const [row] = await db.select().from(exports).where(eq(exports.exportId, exportId));
      return row!;
    },

    /** The outcome, in the transaction that publishes it; false if the export already has one. */
    async finish(
      tx: Executor,
      exportId: string,
      outcome: { state: 'ready'; objectKey: string; sizeBytes: number; expiresAt: Date } | { state: 'failed'; reason: string },
    ): Promise<boolean> {
      const rows = await tx
        .update(exports)
        .set({ ...outcome, updatedAt: sql`now()` })
        .where(and(eq(exports.exportId, exportId), eq(exports.state, 'started')))
        .returning({ exportId: exports.exportId });
      return rows.length > 0;
    },

    /** Ready exports whose time is up, but those of `skip` (which S3 could not delete in this run). */
    async expired(tx: Executor, limit: number, skip: string[] = []) {
      const due = and(eq(exports.state, 'ready'), lt(exports.expiresAt, sql`now()`));
      return tx
        .select({ exportId: exports.exportId, objectKey: exports.objectKey })
        .from(exports)
        .where(skip.length > 0 ? and(due, notInArray(exports.exportId, skip)) : due)
        .limit(limit);
    },

    async markExpired(tx: Executor, exportIds: string[]): Promise<void> {
      if (exportIds.length === 0) return;
      await tx.update(exports).set({ state: 'expired', updatedAt: sql`now()` }).where(inArray(exports.exportId, exportIds));
    },
  };
}
