import { and, desc, eq, lt, sql } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { chatTables } from '@vivier/db-chat';

const { dataExports } = chatTables;

export type ExportRow = typeof dataExports.$inferSelect;

/** chat.exports: reads are scoped to the owner; the worker's results move a row out of `pending` once. */
export function exportsRepository(db: Executor) {
  return {
    async insert(row: typeof dataExports.$inferInsert, tx: Executor = db): Promise<ExportRow> {
      const [inserted] = await tx.insert(dataExports).values(row).returning();
      return inserted!;
    },

    async find(userId: string, id: string, tx: Executor = db): Promise<ExportRow | undefined> {
      const [row] = await tx
        .select()
        .from(dataExports)
        .where(and(eq(dataExports.id, id), eq(dataExports.userId, userId)));
      return row;
    },

    /** The user's pending export started after `since`, if any (the newest). */
    async pendingSince(userId: string, since: Date, tx: Executor = db): Promise<ExportRow | undefined> {
      const [row] = await tx
        .select()
        .from(dataExports)
        .where(and(eq(dataExports.userId, userId), eq(dataExports.status, 'pending'), sql`${dataExports.createdAt} > ${since.toISOString()}::timestamptz`))
        .orderBy(desc(dataExports.id))
        .limit(1);
      return row;
    },

    /** Newest first. */
    /** Newest first (ids are time-ordered), after the export `after` when given. */
    async list(userId: string, limit: number, after?: string, tx: Executor = db): Promise<ExportRow[]> {
      const where = after ? and(eq(dataExports.userId, userId), lt(dataExports.id, after)) : eq(dataExports.userId, userId);
      return tx.select().from(dataExports).where(where).orderBy(desc(dataExports.id)).limit(limit);
    },

    /** Applies the worker's result to a pending export; false when it is unknown or already ended. */
    async finish(
      id: string,
      userId: string,
      result: { status: 'ready'; objectKey: string; sizeBytes: number; expiresAt: Date } | { status: 'failed'; failureReason: string },
      tx: Executor = db,
    ): Promise<boolean> {
      const rows = await tx
        .update(dataExports)
        .set({ ...result, updatedAt: new Date() })
        .where(and(eq(dataExports.id, id), eq(dataExports.userId, userId), eq(dataExports.status, 'pending')))
        .returning({ id: dataExports.id });
      return rows.length > 0;
    },
  };
}
