import { and, desc, eq, lt, sql, type SQL } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { chatTables } from '@vivier/db-chat';

const { chats } = chatTables;

export type ChatRow = typeof chats.$inferSelect;

/** chat.chats: every read and write is scoped to the owner, so another user's chat is simply absent. */
export function chatsRepository(db: Executor) {
  return {
    async insert(row: typeof chats.$inferInsert, tx: Executor = db): Promise<ChatRow> {
      const [inserted] = await tx.insert(chats).values(row).returning();
      return inserted!;
    },

    async find(userId: string, id: string, tx: Executor = db): Promise<ChatRow | undefined> {
      const [row] = await tx
        .select()
        .from(chats)
        .where(and(eq(chats.id, id), eq(chats.userId, userId)));
      return row;
    },

    /** Newest first (ids are time-ordered); `before` is the last id of the previous page. */
    async page(userId: string, options: { archived?: boolean; before?: string; limit: number }, tx: Executor = db): Promise<ChatRow[]> {
      const where: SQL[] = [eq(chats.userId, userId)];
      if (options.archived !== undefined) where.push(eq(chats.archived, options.archived));
      if (options.before) where.push(lt(chats.id, options.before));
      return tx
        .select()
        .from(chats)
        .where(and(...where))
        .orderBy(desc(chats.id))
        .limit(options.limit + 1);
    },

    async update(
      userId: string,
      id: string,
      changes: Partial<Pick<ChatRow, 'title' | 'model' | 'systemPrompt' | 'archived'>> & { updatedAt: Date },
      tx: Executor = db,
    ): Promise<ChatRow | undefined> {
      const [row] = await tx
        .update(chats)
        .set(changes)
        .where(and(eq(chats.id, id), eq(chats.userId, userId)))
        .returning();
      return row;
    },

    /** Keeps `updated_at` moving with the conversation. */
    async touch(id: string, at: Date, tx: Executor = db): Promise<void> {
      await tx
        .update(chats)
        .set({ updatedAt: sql`greatest(${chats.updatedAt}, ${at.toISOString()}::timestamptz)` })
        .where(eq(chats.id, id));
    },

    /** Deletes the chat and (ON DELETE CASCADE) its messages in every partition. */
    async delete(userId: string, id: string, tx: Executor = db): Promise<boolean> {
      const rows = await tx
        .delete(chats)
        .where(and(eq(chats.id, id), eq(chats.userId, userId)))
        .returning({ id: chats.id });
      return rows.length > 0;
    },
  };
}

export type ChatsRepository = ReturnType<typeof chatsRepository>;
