import { sql } from 'drizzle-orm';
import { EVENTS } from '@vivier/contracts';
import type { EventHandlers } from '@vivier/messaging';
import { countTokens } from '@vivier/providers';
import { problems } from '@vivier/service-kit';
import type { FastifyBaseLogger } from 'fastify';
import { coveredBy, shownInContext, storedText, summaryBlock, TOKENS_PER_MESSAGE } from '../context/context.service';
import type { FileRow } from '../files/files.repository';
import type { FilesService } from '../files/files.service';
import type { HistoryRow } from '../messages/messages.repository';
import type { TurnsRepository } from '../messages/turns.repository';

/** History read per round trip while looking for what to fold. */
const SOURCE_BATCH = 500;

/** One message to fold into a summary, as the worker is sent it. */
export interface SourceMessage {
  id: string;
  role: 'user' | 'assistant';
  content: string;
  createdAt: string;
}

/** What the worker is given to write a chat's next summary. */
export interface SummarySource {
  /** The summary chat holds now (null: none yet). */
  summary: { text: string; throughMessageId: string; throughCreatedAt: string } | null;
  /** Oldest first: the messages to fold into the summary; none when there is nothing to fold. */
  messages: SourceMessage[];
}

export interface SummarySourceQuery {
  userId: string;
  /** The tokens the history could take in the context that overflowed (its `context.truncated`). */
  historyBudget: number;
  /** Tokens of messages the summarising model can read at once. */
  budget: number;
  /** The newest message of a summary the caller wrote and chat may not hold yet. */
  after?: { id: string; createdAt: Date };
}

/** A history row as it costs in a context. */
const costOf = (row: HistoryRow) => row.contextTokens + TOKENS_PER_MESSAGE;

/** The longest start of `text` within `max` tokens (whole text when it fits), cut where a token ends. */
async function cutToTokens(text: string, max: number): Promise<string> {
  if ((await countTokens(text)) <= max) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if ((await countTokens(text.slice(0, mid))) <= max) lo = mid;
    else hi = mid - 1;
  }
  return text.slice(0, lo);
}

/**
 * Chat's side of conversation summaries. A reply whose context left out history that no summary
 * covers is reported (`chat.context.truncated`); the worker reads what to fold from `source()` and
 * sends the summary back (`worker.summary.generated`), which `handlers` stores. From then on the
 * context builder gives the model the summary in place of the messages it covers.
 *
 * What is folded: the oldest messages after the current summary, so that the newest whole turns
 * left verbatim take at most half of what the history could take in the context that overflowed
 * (the next summary is needed only once the conversation has grown by about that much again), and
 * never the newest turn. At most what the summarising model can read at once: at least one whole
 * turn, whose messages are cut short when that turn alone is more. A fold ends before a user
 * message, so the verbatim part opens with one. Attached text files are folded with their message.
 */
export class SummariesService {
  constructor(private readonly deps: { turns: TurnsRepository; files: FilesService; log: FastifyBaseLogger }) {}

  async source(chatId: string, query: SummarySourceQuery): Promise<SummarySource> {
    const found = await this.deps.turns.chatWithHistory(query.userId, chatId, SOURCE_BATCH);
    if (!found) throw problems.notFound('No such chat.');
    const { summary } = found;
    let start: { throughId: string; throughAt: Date } | undefined = summary;
    if (query.after && (!start || query.after.createdAt.getTime() > start.throughAt.getTime())) {
      start = { throughId: query.after.id, throughAt: query.after.createdAt };
    }

    // Newest first, down to the summary: the messages a context would show.
    const shown: HistoryRow[] = [];
    const answered = new Set<string>();
    let batch = found.history;
    for (;;) {
      let reached = false;
      for (const row of batch) {
        if (start && coveredBy(start, row)) {
          reached = true;
          break;
        }
        if (shownInContext(row, answered)) shown.push(row);
      }
      if (reached || batch.length < SOURCE_BATCH) break;
      const last = batch[batch.length - 1]!;
      batch = await this.deps.turns.historyBatch(chatId, { id: last.id, createdAt: last.createdAt }, SOURCE_BATCH);
    }

    // The newest whole turns that fit in half the history budget stay verbatim, and the newest turn always does.
    const keep = Math.floor(query.historyBudget / 2);
    let kept = 0;
    let verbatim = 0;
    for (const row of shown) {
      if (kept + costOf(row) > keep) break;
      kept += costOf(row);
      verbatim += 1;
    }
    while (verbatim > 0 && shown[verbatim - 1]!.role === 'assistant') verbatim -= 1;
    verbatim = Math.max(verbatim, shown.findIndex((row) => row.role === 'user') + 1);

    // The older ones, oldest first, as many as the summarising model can read.
    const candidates = shown.slice(verbatim).reverse();
    let end = 0;
    let taken = 0;
    for (const row of candidates) {
      if (end > 0 && taken + costOf(row) > query.budget) break;
      end += 1;
      taken += costOf(row);
    }
    // The fold ends before a user message, so the verbatim part opens with one: back to the last
    // whole turn, or, when not even one turn fits the budget, on to the end of the first.
    const opensTurn = (n: number) => (candidates[n] ?? shown[verbatim - 1])?.role !== 'assistant';
    const fits = end;
    while (end > 0 && !opensTurn(end)) end -= 1;
    if (end === 0 && fits > 0) {
      end = fits;
      while (end < candidates.length && !opensTurn(end)) end += 1;
    }
    const fold = candidates.slice(0, end);

    const fileIds = [...new Set(fold.flatMap((row) => row.attachments))];
    const files = fileIds.length > 0 ? await this.deps.files.texts(query.userId, fileIds) : new Map<string, FileRow>();
    const total = fold.reduce((sum, row) => sum + row.contextTokens, 0);
    const messages: SourceMessage[] = [];
    for (const row of fold) {
      let content = storedText(row, files);
      // A turn longer than the summariser can read: each message gets its share of the budget.
      if (total > query.budget) {
        const share = Math.max(16, Math.floor((query.budget * row.contextTokens) / Math.max(1, total)) - 2);
        const cut = await cutToTokens(content, share);
        if (cut.length < content.length) content = `${cut} […]`;
      }
      messages.push({ id: row.id, role: row.role as 'user' | 'assistant', content, createdAt: new Date(row.createdAt).toISOString() });
    }
    return {
      summary: summary ? { text: summary.text, throughMessageId: summary.throughId, throughCreatedAt: summary.throughAt.toISOString() } : null,
      messages,
    };
  }

  /**
   * `worker.summary.generated`: stored for the chat unless it holds a summary through a later
   * message already (events of a chat come in order, but a retried one can come after a newer
   * one), or the chat is gone. Its size in a context is counted once, here.
   */
  handlers(): EventHandlers {
    return {
      [EVENTS.workerSummaryGenerated.type]: async (event, { tx }) => {
        const d = event.data;
        const tokens = await countTokens(summaryBlock(d.summary));
        const result = (await tx.execute(sql`
          insert into chat.chat_summaries as s (chat_id, user_id, summary, tokens, through_id, through_at, model, updated_at)
          select c.id, c.user_id, ${d.summary}, ${tokens}, ${d.throughMessageId}::uuid, ${d.throughCreatedAt}::timestamptz, ${d.model}, now()
            from chat.chats c where c.id = ${d.chatId}::uuid and c.user_id = ${d.userId}::uuid
          on conflict (chat_id) do update set summary = excluded.summary, tokens = excluded.tokens, through_id = excluded.through_id,
            through_at = excluded.through_at, model = excluded.model, updated_at = excluded.updated_at
          where (excluded.through_at, excluded.through_id) > (s.through_at, s.through_id)
          returning 1`)) as unknown as { rows: unknown[] };
        if (result.rows.length === 0) this.deps.log.debug({ chatId: d.chatId }, 'summary not stored: the chat is gone or holds a later one');
      },
    };
  }
}
