import { and, eq, inArray } from 'drizzle-orm';
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
  };
}
