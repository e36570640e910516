import { EVENTS } from '@vivier/contracts';
import type { EventHandlers } from '@vivier/messaging';
import type { FastifyBaseLogger } from 'fastify';
import { countTokens } from '@vivier/providers';
import { messagesRepository, type ReplyOutcome } from '../messages/messages.repository';
import { executorRunner } from '../messages/turns.repository';
import { timeOfId } from '../../ids';
import { journalEnd, settleCancelledQueuedReply, settleDeletedReply, storeReplyEnd } from '../replies/reply-store';
import type { ReplyStreams } from '../replies/reply-streams.service';

/**
 * `worker.events` `completion.finished`: the worker produced a reply queued with `async: true`.
 * Stored in the consumer's transaction (with the event id, so a redelivery changes nothing):
 * the message, the quota settlement and `chat.message.completed` — the one event analytics count.
 * A reply that was cancelled meanwhile stays cancelled, and the tokens the worker used are added
 * to the month's use. Once committed, the result is also journaled
 * to Redis, so a client following the reply sees it end.
 */
export function completionHandlers(deps: { streams: ReplyStreams; log: FastifyBaseLogger }): EventHandlers {
  return {
    [EVENTS.workerCompletionFinished.type]: async (event, { tx, afterCommit }) => {
      const data = event.data;
      const row = await messagesRepository(tx).findById(data.assistantMessageId, tx);
      const outcomeOf = async (): Promise<ReplyOutcome> => ({
        content: data.content,
        status: data.status,
        provider: data.provider,
        model: data.model,
        promptTokens: data.usage.promptTokens,
        completionTokens: data.usage.completionTokens,
        contextTokens: await countTokens(data.content),
        latencyMs: data.latencyMs,
        timeToFirstTokenMs: data.timeToFirstTokenMs ?? null,
        cached: false,
        errorCode: data.error?.code ?? null,
        errorDetail: data.error?.detail ?? null,
        deltaEnds: data.content.length > 0 ? [data.content.length] : [],
        completedAt: new Date(),
      });
      const createdAt = timeOfId(data.assistantMessageId);
      if (!row && createdAt) {
        // Its chat was deleted while the worker ran it: the delete released the reservation, and
        // what the provider generated is counted all the same (else deleting would make it free).
        await settleDeletedReply(
          executorRunner(tx),
          { id: data.assistantMessageId, chatId: data.chatId, userId: data.userId, replyTo: data.userMessageId, createdAt, quotaReserved: 0, role: 'assistant', attachments: [], params: null },
          await outcomeOf(),
        );
        return;
      }
      if (row?.status === 'queued' && row.chatId === data.chatId) {
        const stored = await storeReplyEnd(executorRunner(tx), row, await outcomeOf(), ['queued']);
        if (stored) {
          // Followers must not see the end before a read of the message does.
          afterCommit(() => journalEnd(deps.streams, stored));
          return;
        }
        // No longer queued when the store came: cancelled since it was read.
      }
      if (row && row.chatId === data.chatId) {
        // Cancelled while queued: it stays cancelled, and what the worker's provider call generated
        // before it stopped is counted (else cancelling would make it free). The statement counts
        // only a cancelled reply without token counts, once.
        const counted = await settleCancelledQueuedReply(executorRunner(tx), row, data.usage, { provider: data.provider, model: data.model });
        deps.log.info({ messageId: data.assistantMessageId, status: row.status, counted, usage: data.usage }, 'worker result for a reply that is no longer queued: text ignored');
        return;
      }
      deps.log.info({ messageId: data.assistantMessageId }, 'worker result for an unknown reply: ignored');
    },
  };
}
