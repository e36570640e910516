import { and, asc, eq, gt, inArray, type SQL } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { chatTables } from '@vivier/db-chat';

const { files } = chatTables;

export type FileRow = typeof files.$inferSelect;

/** chat.files: uploads and their owners (every read is scoped to the owner). */
export function filesRepository(db: Executor) {
  return {
    async insert(row: FileRow, tx: Executor = db): Promise<void> {
      await tx.insert(files).values(row);
    },

    async find(userId: string, id: string, tx: Executor = db): Promise<FileRow | undefined> {
      const [row] = await tx
        .select()
        .from(files)
        .where(and(eq(files.id, id), eq(files.userId, userId)));
      return row;
    },

    async findMany(userId: string, ids: string[], tx: Executor = db): Promise<FileRow[]> {
      if (ids.length === 0) return [];
      return tx
        .select()
        .from(files)
        .where(and(inArray(files.id, ids), eq(files.userId, userId)));
    },

    /** The user's files in id order; `after` is the last id of the previous page. */
    async page(userId: string, options: { after?: string; limit: number }, tx: Executor = db): Promise<FileRow[]> {
      const where: SQL[] = [eq(files.userId, userId)];
      if (options.after) where.push(gt(files.id, options.after));
      return tx
        .select()
        .from(files)
        .where(and(...where))
        .orderBy(asc(files.id))
        .limit(options.limit);
    },
  };
}
