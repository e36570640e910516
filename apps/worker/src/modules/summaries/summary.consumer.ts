import { eq, sql } from 'drizzle-orm';
import { createEvent, cutText, EVENTS, SUMMARY_MAX_CHARS, type EventOf } from '@vivier/contracts';
import { workerTables } from '@vivier/db-worker';
import type { EventHandlers, Executor, HandlerContext, Publish } from '@vivier/messaging';
import type { ProviderRouter } from '@vivier/providers';
import type { FastifyBaseLogger } from 'fastify';
import { Counter, type Registry } from 'prom-client';
import { callProvider, ProviderCallFailure } from '../completions/provider-call';
import { ChatRefused } from '../chat-internal';
import { fetchSummarySource, type SummarySource } from './chat-summary.client';

const { chatSummaries } = workerTables;

export interface SummaryConsumerDeps {
  router: ProviderRouter;
  /** The app's Prometheus registry (vivier_worker_summaries_total). */
  metrics: Registry;
  publish: Publish;
  logger: FastifyBaseLogger;
  chatUrl: string;
  internalSecret: string;
  /** SUMMARY_MODEL; empty = the model the reply was asked of. */
  summaryModel: string;
  /** SUMMARY_MAX_TOKENS: the longest summary asked for. */
  maxTokens: number;
  /** SUMMARY_TIMEOUT_MS: one summary call's budget, retries and fallbacks included. */
  timeoutMs: number;
  maxAttempts: number;
}

/** Tokens of the instructions and framing around what is summarised. */
const PROMPT_OVERHEAD = 256;
/** The fewest tokens of messages a summary call is given, whatever the model's window. */
const MIN_BUDGET = 64;
/** Summary calls one event may make to catch a chat up. */
const MAX_ROUNDS = 4;
/** The shortest summary asked for, whatever the reply model's window. */
const MIN_SUMMARY_TOKENS = 32;

function instructions(maxTokens: number): string {
  const words = Math.max(50, Math.floor(maxTokens * 0.6));
  return (
    'You keep a running summary of a conversation between a user and an AI assistant, for the assistant to read ' +
    'in place of the messages it summarises. Given the summary so far (if any) and the messages that follow it, ' +
    'write the updated summary. Keep every fact, decision, preference, name, number, piece of code and open ' +
    'question a later reply may need, in the order they came up; drop pleasantries. Write in the language of the ' +
    `conversation, as short paragraphs or bullet points, in at most about ${words} words. Answer with the summary only.`
  );
}

/** What the model is asked to summarise: the summary so far, then the messages, each with who wrote it. */
export function summaryInput(previous: string | undefined, messages: SummarySource['messages']): string {
  const lines = [`Summary so far:\n${previous?.trim() || '(none: the messages below open the conversation)'}`, 'Messages that follow it:'];
  for (const m of messages) lines.push(`${m.role === 'user' ? 'User' : 'Assistant'}: ${m.content}`);
  return lines.join('\n\n');
}

/** A model's answer as a summary: trimmed, without a "Summary:" heading, within the contract's length. */
export function cleanSummary(raw: string): string {
  const text = raw.trim().replace(/^(updated\s+)?summary\s*:\s*/i, '').trim();
  return cutText(text, SUMMARY_MAX_CHARS);
}

/**
 * `chat.context.truncated`: a chat's history no longer fits its model's window. Chat says which messages to
 * fold (the oldest after its summary, see chat's SummariesService); the model writes the summary
 * so far plus those messages as a new summary; it is recorded here and published as
 * `summary.generated` in one transaction, and chat gives it to later replies in their place.
 * Each event builds on the newest summary written for the chat, here or in chat, so one that
 * finds nothing new to fold (the summary before it is on its way to chat) does nothing, and one
 * retried after a later one (a retry topic does not hold its partition back) changes nothing. A
 * chat far behind is caught up in up to MAX_ROUNDS calls. A deleted chat (chat answers 404, or
 * its `chat.deleted` came first) gets none. A summary is a help, not a promise: a model that fails
 * for good is logged, and the chat's next overflowing reply asks again.
 */
export function summaryHandlers(deps: SummaryConsumerDeps): EventHandlers {
  const outcomes = new Counter({
    name: 'vivier_worker_summaries_total',
    help: 'chat.context.truncated events handled, by outcome: written, nothing_to_fold, chat_gone, model_failed (given up).',
    labelNames: ['outcome'] as const,
    registers: [deps.metrics],
  });
  /**
   * The longest summary worth writing for replies of `replyModel`: SUMMARY_MAX_TOKENS, but at most
   * an eighth of its window (a quarter of the least input it leaves), so the summary fits beside
   * the history it is meant to make room for.
   */
  function summaryTokensFor(replyModel: string): number {
    const window = deps.router.resolve(replyModel)?.contextWindow ?? Infinity;
    return Math.max(MIN_SUMMARY_TOKENS, Math.min(deps.maxTokens, Math.floor(window / 8)));
  }

  /** Tokens of messages the summarising model can read in one call, beside the summary so far and its answer. */
  function budgetFor(model: string, summaryTokens: number): number {
    const window = deps.router.resolve(model)?.contextWindow ?? 0;
    return Math.max(MIN_BUDGET, Math.floor(window - 2 * summaryTokens - PROMPT_OVERHEAD));
  }

  async function truncated(event: EventOf<typeof EVENTS.chatContextTruncated>, { tx, attempt, signal }: HandlerContext): Promise<void> {
    const { chatId, userId, historyBudget } = event.data;
    const log = deps.logger.child({ chatId, eventId: event.id });
    const model = deps.summaryModel || event.data.model;
    const summaryTokens = summaryTokensFor(event.data.model);
    const budget = budgetFor(model, summaryTokens);
    const [own] = await tx.select().from(chatSummaries).where(eq(chatSummaries.chatId, chatId));
    if (own?.deletedAt) return void outcomes.inc({ outcome: 'chat_gone' });

    // A chat far behind (long before summaries, or a summariser with a smaller window than the
    // reply's model) catches up over a few rounds, each folding what follows the last.
    let after = own?.throughId && own.throughAt ? { id: own.throughId, createdAt: own.throughAt, summary: own.summary ?? '' } : undefined;
    let written: { summary: string; model: string; through: SummarySource['messages'][number] } | undefined;
    for (let round = 1; round <= MAX_ROUNDS; round++) {
      let source: SummarySource;
      try {
        source = await fetchSummarySource(deps.chatUrl, deps.internalSecret, {
          chatId,
          userId,
          historyBudget,
          budget,
          ...(after ? { after: { id: after.id, createdAt: after.createdAt } } : {}),
          signal,
        });
      } catch (error) {
        if (!(error instanceof ChatRefused)) throw error;
        log.info({ status: error.status }, error.status === 404 ? 'no summary: the chat is gone' : 'no summary: chat refused the source request');
        return void outcomes.inc({ outcome: 'chat_gone' });
      }
      if (source.messages.length === 0) {
        if (round === 1) outcomes.inc({ outcome: 'nothing_to_fold' });
        break;
      }
      const chatHas = source.summary ? Date.parse(source.summary.throughCreatedAt) : -Infinity;
      const previous = after && after.createdAt.getTime() > chatHas ? after.summary : source.summary?.text;
      let summary = '';
      let usedModel = model;
      try {
        const call = await callProvider(
          deps.router,
          model,
          [
            { role: 'system', content: instructions(summaryTokens) },
            { role: 'user', content: summaryInput(previous, source.messages) },
          ],
          { maxTokens: summaryTokens, timeoutMs: deps.timeoutMs, signal },
        );
        summary = cleanSummary(call.content);
        usedModel = call.model;
      } catch (error) {
        if (!(error instanceof ProviderCallFailure)) throw error;
        // What earlier rounds wrote is kept; with none, a failure worth retrying is retried.
        if (!written && error.retryable && attempt < deps.maxAttempts) throw error;
        log.warn({ err: error }, "summary model failed; the chat's next overflowing reply asks again");
        if (!written) outcomes.inc({ outcome: 'model_failed' });
        break;
      }
      if (!summary) {
        log.warn({ model: usedModel }, 'the summary model answered nothing; no summary written');
        if (!written) outcomes.inc({ outcome: 'model_failed' });
        break;
      }
      const through = source.messages[source.messages.length - 1]!;
      written = { summary, model: usedModel, through };
      after = { id: through.id, createdAt: new Date(through.createdAt), summary };
    }
    if (!written) return;
    const { summary, through } = written;
    if (await record(tx, { chatId, userId, summary, throughId: through.id, throughAt: new Date(through.createdAt) })) {
      outcomes.inc({ outcome: 'written' });
      await deps.publish(
        tx,
        createEvent(EVENTS.workerSummaryGenerated, { chatId, userId, summary, throughMessageId: through.id, throughCreatedAt: through.createdAt, model: written.model }),
      );
    }
  }

  /**
   * Keeps the summary unless one through a later message was recorded meanwhile, or the chat was
   * deleted; true when kept.
   */
  async function record(tx: Executor, s: { chatId: string; userId: string; summary: string; throughId: string; throughAt: Date }): Promise<boolean> {
    const rows = await tx
      .insert(chatSummaries)
      .values(s)
      .onConflictDoUpdate({
        target: chatSummaries.chatId,
        set: { summary: s.summary, throughId: s.throughId, throughAt: s.throughAt, updatedAt: sql`now()` },
        setWhere: sql`${chatSummaries.deletedAt} is null and (${chatSummaries.throughAt} is null
          or (excluded.through_at, excluded.through_id) > (${chatSummaries.throughAt}, ${chatSummaries.throughId}))`,
      })
      .returning({ chatId: chatSummaries.chatId });
    return rows.length > 0;
  }

  return {
    [EVENTS.chatContextTruncated.type]: truncated,
    // The summary holds the user's words: it goes with the chat, and none is written after.
    [EVENTS.chatDeleted.type]: async (event, { tx }) => {
      const { chatId, userId } = event.data;
      await tx
        .insert(chatSummaries)
        .values({ chatId, userId, deletedAt: sql`now()` })
        .onConflictDoUpdate({
          target: chatSummaries.chatId,
          set: { summary: null, throughId: null, throughAt: null, deletedAt: sql`coalesce(${chatSummaries.deletedAt}, now())`, updatedAt: sql`now()` },
        });
    },
  };
}
