import { and, asc, eq, getTableColumns, gt, gte, inArray, lt, type SQL } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { chatTables, type MessageStatus } from '@vivier/db-chat';
import type { MessageView } from '../../http.schema';
import { timeOfId } from '../../ids';

const { messages } = chatTables;

export type MessageRow = Omit<typeof messages.$inferSelect, 'search'>;
export type NewMessageRow = typeof messages.$inferInsert;

/** The columns a context needs (never the tsvector). */
export const historyColumns = {
  id: messages.id,
  role: messages.role,
  content: messages.content,
  status: messages.status,
  replyTo: messages.replyTo,
  contextTokens: messages.contextTokens,
  attachments: messages.attachments,
  createdAt: messages.createdAt,
};
/**
 * A message as a model context reads it. `createdAt` stays PostgreSQL's text (it only ever goes
 * back to PostgreSQL, as a read cursor): parsing a date per row was the largest cost of reading
 * a long history.
 */
export type HistoryRow = { [K in Exclude<keyof typeof historyColumns, 'createdAt'>]: MessageRow[K] } & { createdAt: string };

const { search: _search, ...rowColumns } = getTableColumns(messages);

export function messageView(row: MessageRow): MessageView {
  return {
    id: row.id,
    chatId: row.chatId,
    role: row.role,
    content: row.content,
    status: row.status,
    model: row.model,
    provider: row.provider,
    usage: row.promptTokens === null || row.completionTokens === null ? null : { promptTokens: row.promptTokens, completionTokens: row.completionTokens },
    cached: row.cached,
    replyTo: row.replyTo,
    attachments: row.attachments,
    error: row.errorCode ? { code: row.errorCode, detail: row.errorDetail ?? '' } : null,
    latencyMs: row.latencyMs,
    timeToFirstTokenMs: row.timeToFirstTokenMs,
    createdAt: row.createdAt.toISOString(),
    completedAt: row.completedAt ? row.completedAt.toISOString() : null,
  };
}

/** A message by id: with a UUIDv7 the partition is known from the id itself. */
function byId(id: string): SQL {
  const at = timeOfId(id);
  return at ? and(eq(messages.id, id), eq(messages.createdAt, at))! : eq(messages.id, id);
}

/** What a reply stores when it ends. */
export interface ReplyOutcome {
  content: string;
  status: Extract<MessageStatus, 'completed' | 'cancelled' | 'failed'>;
  provider: string | null;
  model: string | null;
  promptTokens: number | null;
  completionTokens: number | null;
  contextTokens: number;
  latencyMs: number;
  timeToFirstTokenMs: number | null;
  cached: boolean;
  errorCode: string | null;
  errorDetail: string | null;
  deltaEnds: number[];
  completedAt: Date;
}

/** chat.messages (partitioned by month). Callers check chat ownership; rows carry the owner too. */
export function messagesRepository(db: Executor) {
  return {
    async insert(rows: NewMessageRow[], tx: Executor = db): Promise<MessageRow[]> {
      return tx.insert(messages).values(rows).returning(rowColumns);
    },

    /** A message of the user's in that chat; without `chatId`, in whichever chat it is. */
    async find(userId: string, chatId: string | undefined, id: string, tx: Executor = db): Promise<MessageRow | undefined> {
      const [row] = await tx
        .select(rowColumns)
        .from(messages)
        .where(and(byId(id), chatId === undefined ? undefined : eq(messages.chatId, chatId), eq(messages.userId, userId)));
      return row;
    },

    async findById(id: string, tx: Executor = db): Promise<MessageRow | undefined> {
      const [row] = await tx.select(rowColumns).from(messages).where(byId(id));
      return row;
    },

    /** Oldest first; `after` is the last id of the previous page. */
    async page(chatId: string, options: { after?: string; limit: number }, tx: Executor = db): Promise<MessageRow[]> {
      const where: SQL[] = [eq(messages.chatId, chatId)];
      if (options.after) {
        where.push(gt(messages.id, options.after));
        const at = timeOfId(options.after);
        if (at) where.push(gte(messages.createdAt, at));
      }
      return tx
        .select(rowColumns)
        .from(messages)
        .where(and(...where))
        .orderBy(asc(messages.createdAt), asc(messages.id))
        .limit(options.limit + 1);
    },

    /** Ends a reply still in flight; undefined when it had already ended (or its chat is gone). */
    async finish(id: string, outcome: ReplyOutcome, from: MessageStatus[] = ['streaming'], tx: Executor = db): Promise<MessageRow | undefined> {
      const [row] = await tx
        .update(messages)
        .set({ ...outcome, quotaReserved: 0 })
        .where(and(byId(id), inArray(messages.status, from)))
        .returning(rowColumns);
      return row;
    },

    /** In-flight replies older than `olderThan`, for the sweeper. */
    async inFlight(olderThan: Date, newerThan: Date, tx: Executor = db): Promise<Array<Pick<MessageRow, 'id' | 'chatId' | 'userId' | 'status' | 'createdAt'>>> {
      return tx
        .select({ id: messages.id, chatId: messages.chatId, userId: messages.userId, status: messages.status, createdAt: messages.createdAt })
        .from(messages)
        .where(and(eq(messages.status, 'streaming'), lt(messages.createdAt, olderThan), gt(messages.createdAt, newerThan)))
        .limit(500);
    },
  };
}

export type MessagesRepository = ReturnType<typeof messagesRepository>;
