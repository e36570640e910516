import { and, eq, isNull, sql } from 'drizzle-orm';
import { cutText } from '@vivier/contracts';
import { workerTables } from '@vivier/db-worker';
import type { Executor } from '@vivier/messaging';

const { chatTitles } = workerTables;

/** Longest first message kept to write a title from. */
export const FIRST_MESSAGE_CHARS = 2000;

/**
 * worker.chat_titles: per chat, what a title is written from and whether it has one. The first
 * message (the user's words) is kept only while a title may still be written from it: it is
 * dropped when the chat gets a title (generated or the user's) or is deleted.
 */
export function chatTitleRepository() {
  return {
    async chatCreated(tx: Executor, chat: { chatId: string; userId: string; model: string; titled: boolean }): Promise<void> {
      await tx
        .insert(chatTitles)
        .values({ chatId: chat.chatId, userId: chat.userId, model: chat.model, ...(chat.titled ? { titledByUser: sql`now()` } : {}) })
        .onConflictDoUpdate({
          target: chatTitles.chatId,
          set: { model: chat.model, updatedAt: sql`now()`, ...(chat.titled ? { titledByUser: sql`coalesce(${chatTitles.titledByUser}, now())`, firstMessage: null } : {}) },
        });
    },

    async chatUpdated(tx: Executor, chat: { chatId: string; userId: string; model?: string; titled: boolean }): Promise<void> {
      const set = {
        updatedAt: sql`now()`,
        ...(chat.model === undefined ? {} : { model: chat.model }),
        ...(chat.titled ? { titledByUser: sql`coalesce(${chatTitles.titledByUser}, now())`, firstMessage: null } : {}),
      };
      await tx
        .insert(chatTitles)
        .values({ chatId: chat.chatId, userId: chat.userId, ...(chat.model === undefined ? {} : { model: chat.model }), ...(chat.titled ? { titledByUser: sql`now()` } : {}) })
        .onConflictDoUpdate({ target: chatTitles.chatId, set });
    },

    async chatDeleted(tx: Executor, chatId: string, userId: string): Promise<void> {
      await tx
        .insert(chatTitles)
        .values({ chatId, userId, deletedAt: sql`now()` })
        .onConflictDoUpdate({ target: chatTitles.chatId, set: { deletedAt: sql`now()`, firstMessage: null, updatedAt: sql`now()` } });
    },

    /**
     * Keeps the chat's first user message, and returns the chat as it is now (a reply completed
     * before the message arrived means the title is written now).
     */
    async messageCreated(tx: Executor, m: { chatId: string; userId: string; content: string; model: string }) {
      const content = cutText(m.content, FIRST_MESSAGE_CHARS);
      const [row] = await tx
        .insert(chatTitles)
        .values({ chatId: m.chatId, userId: m.userId, model: m.model, firstMessage: content })
        .onConflictDoUpdate({
          target: chatTitles.chatId,
          set: {
            // Not kept for a chat that needs no title any more.
            firstMessage: sql`case when ${chatTitles.deletedAt} is null and ${chatTitles.titledByUser} is null and ${chatTitles.titleGeneratedAt} is null
              then coalesce(${chatTitles.firstMessage}, excluded.first_message) end`,
            model: sql`coalesce(${chatTitles.model}, excluded.model)`,
            updatedAt: sql`now()`,
          },
        })
        .returning();
      return row!;
    },

    /** A reply completed before the chat's first message is known (its event is on a retry topic); returns the chat as it is now. */
    async replyCompleted(tx: Executor, r: { chatId: string; userId: string; model: string }) {
      const [row] = await tx
        .insert(chatTitles)
        .values({ chatId: r.chatId, userId: r.userId, model: r.model, replyCompletedAt: sql`now()` })
        .onConflictDoUpdate({
          target: chatTitles.chatId,
          set: { replyCompletedAt: sql`coalesce(${chatTitles.replyCompletedAt}, now())`, updatedAt: sql`now()` },
        })
        .returning();
      return row!;
    },

    async find(tx: Executor, chatId: string) {
      const [row] = await tx.select().from(chatTitles).where(eq(chatTitles.chatId, chatId));
      return row;
    },

    /** Records the title in the transaction that publishes it; false if the chat got one meanwhile. */
    async claimTitle(tx: Executor, chatId: string, title: string): Promise<boolean> {
      const rows = await tx
        .update(chatTitles)
        .set({ title, titleGeneratedAt: sql`now()`, firstMessage: null, updatedAt: sql`now()` })
        .where(and(eq(chatTitles.chatId, chatId), isNull(chatTitles.titleGeneratedAt), isNull(chatTitles.titledByUser), isNull(chatTitles.deletedAt)))
        .returning({ chatId: chatTitles.chatId });
      return rows.length > 0;
    },
  };
}
