import { and, eq, isNull } from 'drizzle-orm';
import { EVENTS } from '@vivier/contracts';
import { chatTables } from '@vivier/db-chat';
import type { EventHandlers } from '@vivier/messaging';
import type { FastifyBaseLogger } from 'fastify';

const { chats } = chatTables;

/**
 * `worker.events` `title.generated`: the worker's title for a chat, applied only while the chat
 * has none (a title the user set meanwhile wins), in the consumer's transaction with the event id.
 * `updated_at` is left alone: a generated title is not the user's activity.
 */
export function titleHandlers(deps: { log: FastifyBaseLogger }): EventHandlers {
  return {
    [EVENTS.workerTitleGenerated.type]: async (event, { tx }) => {
      const { chatId, userId, title } = event.data;
      const rows = await tx
        .update(chats)
        .set({ title })
        .where(and(eq(chats.id, chatId), eq(chats.userId, userId), isNull(chats.title)))
        .returning({ id: chats.id });
      if (rows.length === 0) deps.log.debug({ chatId }, 'generated title not applied: the chat has a title or is gone');
    },
  };
}
