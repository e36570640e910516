import { sql } from 'drizzle-orm';
import { EVENTS } from '@vivier/contracts';
import type { EventHandlers } from '@vivier/messaging';
import { countTokens } from '@vivier/providers';
import { problems } from '@vivier/service-kit';
import type { FastifyBaseLogger } from 'fastify';
import type { ChatDatabase } from '../../database';
import { ContextBuilder, coveredBy, shownInContext, summaryBlock } from '../context/context.service';
import type { HistoryRow } from '../messages/messages.repository';
import type { TurnsRepository } from '../messages/turns.repository';
import type { ModelCatalog } from '../models/models.service';

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
  /** The model the reply was asked of: its window decides how much history stays verbatim. */
  model: string;
  /** Tokens of messages the summarising model can take at once. */
  budget: number;
  /** The newest message of a summary the caller wrote and chat may not hold yet. */
  after?: { id: string; createdAt: Date };
}

/**
 * Chat's side of conversation summaries. A reply whose context left out history that no summary
 * covers is reported (`chat.context.truncated`); the worker reads what to fold from `source()` and sends
 * the summary back (`worker.summary.generated`), which `handlers` stores. From then on the context
 * builder gives the model the summary in place of the messages it covers.
 *
 * What is folded: the oldest messages after the current summary, so that the newest whole turns
 * left verbatim take at most half of the model's input budget (the next summary is needed only
 * once the conversation has grown by about that much again), and no more than the summarising
 * model can read at once (at least one whole turn). A fold ends before a user message, so the
 * verbatim part opens with one.
 */
export class SummariesService {
  constructor(private readonly deps: { db: ChatDatabase; turns: TurnsRepository; models: ModelCatalog; maxOutputTokens: number; log: FastifyBaseLogger }) {}

  async source(chatId: string, query: SummarySourceQuery): Promise<SummarySource> {
    const found = await this.deps.turns.chatWithHistory(query.userId, chatId, SOURCE_BATCH);
    if (!found) throw problems.notFound('No such chat.');
    const { chat, summary } = found;
    let start: { throughId: string; throughAt: Date } | undefined = summary;
    if (query.after && (!start || query.after.createdAt.getTime() > start.throughAt.getTime())) {
      start = { throughId: query.after.id, throughAt: query.after.createdAt };
    }
    const model = this.deps.models.servable(query.model) ? query.model : chat.model;
    const window = this.deps.models.resolve(model).contextWindow;
    const keep = Math.floor((window - ContextBuilder.outputBudget(window, this.deps.maxOutputTokens)) / 2);

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

    // The newest whole turns that fit in `keep` stay verbatim; the older ones, oldest first, may be folded.
    let kept = 0;
    let verbatim = 0;
    for (const row of shown) {
      if (kept + row.contextTokens > keep) break;
      kept += row.contextTokens;
      verbatim += 1;
    }
    // Whole turns: what stays verbatim opens with a user message.
    while (verbatim > 0 && shown[verbatim - 1]!.role === 'assistant') verbatim -= 1;
    const candidates = shown.slice(verbatim).reverse();
    let end = 0;
    let taken = 0;
    for (const row of candidates) {
      if (end > 0 && taken + row.contextTokens > query.budget) break;
      end += 1;
      taken += row.contextTokens;
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

    return {
      summary: summary ? { text: summary.text, throughMessageId: summary.throughId, throughCreatedAt: summary.throughAt.toISOString() } : null,
      messages: fold.map((row) => ({
        id: row.id,
        role: row.role as 'user' | 'assistant',
        // One message longer than the summariser can read is cut (whole messages otherwise).
        content: row.contextTokens > query.budget ? row.content.slice(0, query.budget * 3) : row.content,
        createdAt: new Date(row.createdAt).toISOString(),
      })),
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
