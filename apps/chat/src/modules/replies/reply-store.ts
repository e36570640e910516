import { createEvent, eventModelId, EVENTS } from '@vivier/contracts';
import type { MessageStatus } from '@vivier/db-chat';
import type { MessageRow, ReplyOutcome } from '../messages/messages.repository';
import { turnsRepository, type SqlRunner } from '../messages/turns.repository';
import { quotaMonth } from '../quotas/quotas.repository';
import { eventsFromRow } from './reply-events';
import type { ReplyStreams } from './reply-streams.service';

/** The `chat.message.completed` payload of a stored reply. */
export function completedEventData(row: MessageRow, userMessageId: string) {
  return {
    chatId: row.chatId,
    userId: row.userId,
    messageId: row.id,
    userMessageId,
    status: row.status as 'completed' | 'cancelled' | 'failed',
    provider: row.provider ?? 'unknown',
    model: eventModelId(row.model ?? 'unknown'),
    usage: { promptTokens: row.promptTokens ?? 0, completionTokens: row.completionTokens ?? 0 },
    latencyMs: row.latencyMs ?? 0,
    ...(row.timeToFirstTokenMs !== null ? { timeToFirstTokenMs: row.timeToFirstTokenMs } : {}),
    cached: row.cached,
    ...(row.errorCode ? { error: { code: row.errorCode, detail: (row.errorDetail ?? '').slice(0, 2000) } } : {}),
    completedAt: (row.completedAt ?? new Date()).toISOString(),
  };
}

/**
 * Stores the end of a reply that is still `from` (one of the in-flight statuses), in one
 * statement: the message, the settlement of its quota reservation (a cached reply costs
 * nothing) and `chat.message.completed`. Undefined when it had already ended (nothing written).
 */
export async function storeReplyEnd(
  runner: SqlRunner,
  row: Pick<MessageRow, 'id' | 'chatId' | 'userId' | 'replyTo' | 'createdAt' | 'quotaReserved' | 'role' | 'attachments' | 'params'>,
  outcome: ReplyOutcome,
  from: MessageStatus[],
): Promise<MessageRow | undefined> {
  const ended = { ...row, ...outcome, quotaReserved: 0 } as MessageRow;
  const used = outcome.cached ? 0 : (outcome.promptTokens ?? 0) + (outcome.completionTokens ?? 0);
  return turnsRepository(runner).endReply({
    row,
    from,
    outcome,
    reserved: row.quotaReserved,
    used,
    month: quotaMonth(row.createdAt),
    events: [createEvent(EVENTS.chatMessageCompleted, completedEventData(ended, row.replyTo ?? row.id))],
  });
}

/**
 * The usage of a reply whose message is gone (its chat was deleted while it ran): the delete
 * released its reservation, so what it generated is added to the month's use, with its
 * `chat.message.completed`, in one statement. Nothing when it cost nothing.
 */
export async function settleDeletedReply(
  runner: SqlRunner,
  row: Pick<MessageRow, 'id' | 'chatId' | 'userId' | 'replyTo' | 'createdAt' | 'quotaReserved' | 'role' | 'attachments' | 'params'>,
  outcome: ReplyOutcome,
): Promise<void> {
  const used = outcome.cached ? 0 : (outcome.promptTokens ?? 0) + (outcome.completionTokens ?? 0);
  if (used === 0) return;
  const ended = { ...row, ...outcome, quotaReserved: 0 } as MessageRow;
  await turnsRepository(runner).settleAndPublish([
    {
      userId: row.userId,
      month: quotaMonth(row.createdAt),
      reserved: 0,
      used,
      events: [createEvent(EVENTS.chatMessageCompleted, completedEventData(ended, row.replyTo ?? row.id))],
    },
  ]);
}

/**
 * The usage of a queued reply that was cancelled while the worker produced it: the cancel stored
 * it `cancelled` with no tokens and released its reservation (its `chat.message.completed` has
 * gone, with no usage). What the provider generated before the worker aborted is recorded on the
 * message and added to the month's use, once (only while the message has no token counts yet),
 * with `chat.message.usage_recorded` for analytics (a second `message.completed` would count a
 * second reply), in one statement.
 */
export async function settleCancelledQueuedReply(
  runner: SqlRunner,
  row: Pick<MessageRow, 'id' | 'chatId' | 'userId' | 'createdAt'>,
  usage: { promptTokens: number; completionTokens: number },
  by: { provider: string; model: string },
): Promise<boolean> {
  const used = usage.promptTokens + usage.completionTokens;
  if (used === 0) return false;
  const updated = await runner.rows<{ id: string }>(
    'chat-cancelled-queued-usage-v1',
    `update chat.messages set prompt_tokens = $3, completion_tokens = $4
     where id = $1::uuid and created_at = $2::timestamptz and status = 'cancelled' and prompt_tokens is null and completion_tokens is null
     returning id`,
    [row.id, row.createdAt.toISOString(), usage.promptTokens, usage.completionTokens],
  );
  if (updated.length === 0) return false;
  const recorded = createEvent(EVENTS.chatMessageUsageRecorded, {
    chatId: row.chatId,
    userId: row.userId,
    messageId: row.id,
    provider: by.provider,
    model: by.model,
    usage,
    recordedAt: new Date().toISOString(),
  });
  await turnsRepository(runner).settleAndPublish([{ userId: row.userId, month: quotaMonth(row.createdAt), reserved: 0, used, events: [recorded] }]);
  return true;
}

/** Journals the events of a reply stored without streaming (after its `message` event): its text, usage and end. */
export function journalEnd(streams: ReplyStreams, row: MessageRow): void {
  for (const event of eventsFromRow(row, undefined, 1)) {
    streams.append({ ...event, messageId: row.id, chatId: row.chatId }, row.userId, event.type === 'done' || event.type === 'error');
  }
}
