import type { MessageRow } from '../messages/messages.repository';
import { messageView } from '../messages/messages.repository';

// The events of one reply, as SSE sends them and as Redis keeps them. `seq` is the SSE `id`:
// 1 `message`, then `delta`s, then `usage` (when tokens were spent), then `done` or `error`.

export type ReplyEventType = 'message' | 'delta' | 'usage' | 'done' | 'error';

export interface ReplyEvent {
  seq: number;
  type: ReplyEventType;
  data: unknown;
}

/** What Redis pub/sub carries on `<prefix>user:<userId>` (and each stream entry holds). */
export interface ReplyEnvelope extends ReplyEvent {
  messageId: string;
  chatId: string;
}

export const isTerminal = (type: ReplyEventType) => type === 'done' || type === 'error';

/** The first event: the stored user message and the id of the reply being produced. */
export function messageEventData(userMessage: MessageRow, assistantMessageId: string) {
  return { userMessage: messageView(userMessage), assistantMessageId };
}

/** The `done` or `error` event that ends a stored reply. */
export function terminalEvent(row: MessageRow): { type: 'done' | 'error'; data: unknown } {
  if (row.status === 'failed') {
    return { type: 'error', data: { code: row.errorCode ?? 'internal_error', detail: row.errorDetail ?? '', message: messageView(row) } };
  }
  return { type: 'done', data: { message: messageView(row) } };
}

/**
 * The events of a finished reply after `after`, rebuilt from its row with the same ids it was
 * streamed with: `deltaEnds` says where each delta ended, so a client that saw delta n gets the
 * text after it in one event (with the id of the last delta), then `usage` and the end.
 */
export function eventsFromRow(row: MessageRow, userMessage: MessageRow | undefined, after: number): ReplyEvent[] {
  const out: ReplyEvent[] = [];
  const ends = row.deltaEnds ?? [];
  const k = ends.length;
  if (after < 1 && userMessage) out.push({ seq: 1, type: 'message', data: messageEventData(userMessage, row.id) });
  if (k > 0 && after < k + 1) {
    const from = after < 2 ? 0 : (ends[after - 2] ?? 0);
    const text = row.content.slice(from, ends[k - 1]);
    if (text.length > 0) out.push({ seq: k + 1, type: 'delta', data: { text } });
  }
  let seq = k + 2;
  if (row.promptTokens !== null && row.completionTokens !== null) {
    if (after < seq) out.push({ seq, type: 'usage', data: { promptTokens: row.promptTokens, completionTokens: row.completionTokens } });
    seq += 1;
  }
  if (after < seq) out.push({ seq, ...terminalEvent(row) });
  return out;
}
