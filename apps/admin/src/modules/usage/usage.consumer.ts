import { EVENTS } from '@vivier/contracts';
import type { EventHandlers } from '@vivier/messaging';
import type { usageRepository } from './usage.repository';
import type { UsageService } from './usage.service';

/**
 * `chat.events` → per-user totals and usage aggregates (group `admin`, applied in runs). Each
 * handler only appends the event's contribution to `usage_pending`; the whole run is folded into
 * the shared rows at commit, grouped and in key order (see libs/db/admin migration 0003). Chats
 * of different users arrive concurrently on different partitions and touch the same rows (today's
 * row of a model): folding in key order keeps those transactions from deadlocking, and a run of
 * 100 replies costs one upsert per distinct row instead of five per reply.
 */
export function usageHandlers(deps: { usage: UsageService; repository: ReturnType<typeof usageRepository> }): EventHandlers {
  const { repository } = deps;
  return {
    [EVENTS.chatCreated.type]: async (event, { tx }) => {
      await repository.addPending({ userId: event.data.userId, at: new Date(event.data.createdAt), chats: 1 }, tx);
    },
    [EVENTS.chatDeleted.type]: async (event, { tx }) => {
      await repository.addPending({ userId: event.data.userId, at: null, chats: -1 }, tx);
    },
    [EVENTS.chatMessageCreated.type]: async (event, { tx }) => {
      await repository.addPending({ userId: event.data.userId, at: new Date(event.data.createdAt), sent: 1 }, tx);
    },
    [EVENTS.chatMessageCompleted.type]: async (event, { tx }) => {
      await deps.usage.applyReply(event.data, tx);
    },
    [EVENTS.chatMessageUsageRecorded.type]: async (event, { tx }) => {
      await deps.usage.applyLateUsage(event.data, tx);
    },
  };
}
