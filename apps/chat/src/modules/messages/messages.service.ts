import type { FastifyBaseLogger } from 'fastify';
import { createEvent, EVENTS, type AnyEvent } from '@vivier/contracts';
import { HttpProblem, problems, type Identity } from '@vivier/service-kit';
import type { ChatMessage, RoutedChatRequest } from '@vivier/providers';
import type { ChatDatabase } from '../../database';
import { decodeCursor, pageOf } from '../../http.schema';
import { newId } from '../../ids';
import type { ChatMetrics } from '../../metrics';
import type { ResponseCache } from '../cache/response-cache.service';
import type { ChatRow } from '../chats/chats.repository';
import type { ChatsService } from '../chats/chats.service';
import { ContextBuilder, type BuiltContext, type ChatSummary } from '../context/context.service';
import type { ContextAttachment, FilesService } from '../files/files.service';
import type { ModelCatalog } from '../models/models.service';
import { quotaMonth } from '../quotas/quotas.repository';
import { messageEventData } from '../replies/reply-events';
import type { ReplyRun, ReplyRunner } from '../replies/reply-runner.service';
import { QUEUED_CANCEL_FLAG_MS, type ReplyStreams } from '../replies/reply-streams.service';
import type { ReplySweeper } from '../replies/reply-sweeper.service';
import { messagesRepository, messageView, type HistoryRow, type MessageRow, type NewMessageRow } from './messages.repository';
import type { TurnsRepository } from './turns.repository';

export interface ReplyOptions {
  model?: string;
  temperature?: number;
  maxTokens?: number;
  /** Queue the reply for the worker (202) instead of producing it here. */
  async?: boolean;
}

/**
 * The options of a regenerate of `target`: what the request leaves out is taken from the reply
 * being regenerated (its model, if anything still serves it, its temperature and maximum), so an
 * empty request asks for a reply like that one. A user message as the target gives nothing.
 */
export function likeReply(target: MessageRow, options: ReplyOptions, servable: (model: string) => boolean): ReplyOptions {
  if (target.role !== 'assistant') return options;
  const model = options.model ?? (target.model && servable(target.model) ? target.model : undefined);
  const temperature = options.temperature ?? target.params?.temperature;
  const maxTokens = options.maxTokens ?? target.params?.maxTokens;
  return {
    ...options,
    ...(model !== undefined ? { model } : {}),
    ...(temperature !== undefined ? { temperature } : {}),
    ...(maxTokens !== undefined ? { maxTokens } : {}),
  };
}

export interface SendInput extends ReplyOptions {
  content: string;
  attachments?: string[];
}

/** How long the worker can learn of a queued reply's cancel before its job comes up (a day of backlog). */

/** A reply that was accepted: its stored messages and, unless it was queued, the run producing it. */
export interface StartedReply {
  userMessage: MessageRow;
  assistant: MessageRow;
  run?: ReplyRun;
}

export interface MessagesServiceDeps {
  db: ChatDatabase;
  turns: TurnsRepository;
  chats: ChatsService;
  models: ModelCatalog;
  files: FilesService;
  context: ContextBuilder;
  cache: ResponseCache;
  runner: ReplyRunner;
  streams: ReplyStreams;
  sweeper: ReplySweeper;
  metrics: ChatMetrics;
  log: FastifyBaseLogger;
  maxOutputTokens: number;
}

function secondsToNextMonth(now: Date): number {
  const next = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1);
  return Math.max(1, Math.ceil((next - now.getTime()) / 1000));
}

/** A message's text without its images (the worker gets none). */
function plainText(content: ChatMessage['content']): string {
  return typeof content === 'string' ? content : content.map((p) => (p.type === 'text' ? p.text : '')).join('');
}

/** Text-only messages for a job event. */
function textOnly(messages: ChatMessage[]): Array<{ role: 'user' | 'assistant'; content: string }> {
  return messages
    .filter((m): m is ChatMessage & { role: 'user' | 'assistant' } => m.role !== 'system')
    .map((m) => ({ role: m.role, content: plainText(m.content) }));
}

/** The text of a context's system message (null without one). */
function systemOf(messages: ChatMessage[]): string | null {
  const first = messages[0];
  return first?.role === 'system' ? plainText(first.content) : null;
}

/**
 * Messages of a chat: pages, reads, and replies — sending (user message + reply), regenerating,
 * cancelling. A send validates and checks everything that can refuse it (model, attachments,
 * context size, quota) before anything is stored; then the user message, the reply in flight and
 * their events are written in one transaction, and the reply runs on its own.
 */
export class MessagesService {
  readonly repository;

  constructor(private readonly deps: MessagesServiceDeps) {
    this.repository = messagesRepository(deps.db);
  }

  async list(user: Identity, chatId: string, query: { limit?: number; cursor?: string }) {
    await this.deps.chats.require(user, chatId);
    const limit = query.limit ?? 50;
    const after = decodeCursor(query.cursor);
    const rows = await this.repository.page(chatId, { ...(after ? { after } : {}), limit });
    return pageOf(rows, limit, messageView);
  }

  /** The caller's message, or 404 (another user's message is not found either). */
  async require(user: Identity, chatId: string, messageId: string): Promise<MessageRow> {
    const row = await this.repository.find(user.sub, chatId, messageId);
    if (!row) throw problems.notFound('No such message.');
    return row;
  }

  async send(user: Identity, chatId: string, input: SendInput): Promise<StartedReply> {
    // The chat (ownership) and the newest history, in one statement.
    const limit = this.deps.context.firstBatchSize(chatId);
    const found = await this.deps.turns.chatWithHistory(user.sub, chatId, limit);
    if (!found) throw problems.notFound('No such chat.');
    const { chat } = found;
    const firstBatch = { rows: found.history, limit };
    const attachments = await this.deps.files.forContext(user, input.attachments ?? []);
    const contextTokens = await ContextBuilder.countCurrent(input.content, attachments);
    return this.startReply(user, chat, input, { content: input.content, attachments, contextTokens }, { firstBatch, summary: found.summary });
  }

  /** A new reply to the user message `messageId` (or to the one the reply `messageId` answered). */
  async regenerate(user: Identity, chatId: string, messageId: string, options: ReplyOptions): Promise<StartedReply> {
    const chat = await this.deps.chats.require(user, chatId);
    const target = await this.require(user, chatId, messageId);
    const question = target.role === 'user' ? target : target.replyTo ? await this.repository.find(user.sub, chatId, target.replyTo) : undefined;
    if (!question) throw problems.notFound('No user message to answer.');
    const [attachments, summary] = await Promise.all([this.deps.files.forContext(user, question.attachments), this.deps.turns.summary(chatId)]);
    return this.startReply(user, chat, likeReply(target, options, (model) => this.deps.models.servable(model)), { content: question.content, attachments, contextTokens: question.contextTokens }, { existingQuestion: question, summary });
  }

  private async startReply(
    user: Identity,
    chat: ChatRow,
    options: ReplyOptions,
    current: { content: string; attachments: ContextAttachment[]; contextTokens: number },
    read: { existingQuestion?: MessageRow; firstBatch?: { rows: HistoryRow[]; limit: number }; summary?: ChatSummary | undefined },
  ): Promise<StartedReply> {
    const { existingQuestion, firstBatch, summary } = read;
    const modelId = options.model ?? chat.model;
    const resolved = this.deps.models.resolve(modelId);
    const context: BuiltContext = await this.deps.context.build({
      chatId: chat.id,
      userId: user.sub,
      systemPrompt: chat.systemPrompt,
      ...(existingQuestion ? { before: { id: existingQuestion.id, createdAt: existingQuestion.createdAt } } : {}),
      current,
      contextWindow: resolved.contextWindow,
      maxOutputTokens: options.maxTokens ?? this.deps.maxOutputTokens,
      ...(firstBatch ? { firstBatch } : {}),
      ...(summary ? { summary } : {}),
    });
    const request: RoutedChatRequest = {
      messages: context.messages,
      maxTokens: context.maxTokens,
      // The context's own count (stored per message): a provider that reports no usage is not re-tokenised.
      promptTokens: context.promptTokens,
      ...(options.temperature !== undefined ? { temperature: options.temperature } : {}),
    };

    const question = existingQuestion ? undefined : newId();
    const answer = newId();
    const month = quotaMonth(answer.createdAt);
    const reserved = context.promptTokens + context.maxTokens;
    const status = options.async ? ('queued' as const) : ('streaming' as const);
    const attachmentIds = current.attachments.map((a) => a.id);
    const rows: NewMessageRow[] = [];
    if (question) {
      rows.push({
        id: question.id,
        chatId: chat.id,
        userId: user.sub,
        role: 'user',
        content: current.content,
        status: 'completed',
        model: modelId,
        contextTokens: current.contextTokens,
        attachments: attachmentIds,
        createdAt: question.createdAt,
        completedAt: question.createdAt,
      });
    }
    const userMessageId = question?.id ?? existingQuestion!.id;
    rows.push({
      id: answer.id,
      chatId: chat.id,
      userId: user.sub,
      role: 'assistant',
      status,
      replyTo: userMessageId,
      model: modelId,
      quotaReserved: reserved,
      params: { ...(options.temperature !== undefined ? { temperature: options.temperature } : {}), maxTokens: context.maxTokens },
      createdAt: answer.createdAt,
    });
    const events: AnyEvent[] = [];
    if (question) {
      events.push(
        createEvent(EVENTS.chatMessageCreated, {
          chatId: chat.id,
          userId: user.sub,
          messageId: question.id,
          content: current.content,
          attachmentIds,
          model: modelId,
          createdAt: question.createdAt.toISOString(),
        }),
      );
    }
    const truncated = question !== undefined && context.omitted > 0;
    if (truncated) {
      // History was left out that no summary covers: the worker folds the oldest of it into the
      // chat's summary, so later replies are given the gist of what they cannot be shown.
      events.push(
        createEvent(EVENTS.chatContextTruncated, {
          chatId: chat.id,
          userId: user.sub,
          messageId: question.id,
          model: modelId,
          omittedMessages: context.omitted,
          historyBudget: context.historyBudget,
          truncatedAt: answer.createdAt.toISOString(),
        }),
      );
    }
    if (options.async) {
      events.push(
        createEvent(EVENTS.jobsCompletionRequested, {
          chatId: chat.id,
          userId: user.sub,
          userMessageId,
          assistantMessageId: answer.id,
          model: modelId,
          // The context's own system message: the chat's system prompt with its summary, if any.
          systemPrompt: systemOf(context.messages),
          messages: textOnly(context.messages),
          maxOutputTokens: context.maxTokens,
          regenerate: existingQuestion !== undefined,
        }),
      );
    }

    // The lease goes out with the next Redis writes; the cache is asked while the turn is stored.
    if (!options.async) this.deps.runner.claim(answer.id);
    // A regenerate asks for another reply: the cache (which holds the one being replaced) is not asked.
    const cacheKey = options.async || existingQuestion ? undefined : this.deps.cache.keyOf(user.sub, resolved, request);
    const [stored, cached] = await Promise.all([
      this.deps.turns.insertTurn({ userId: user.sub, month, reserve: reserved, rows, events, chatId: chat.id, at: answer.createdAt }).catch(async (error: unknown) => {
        // The chat was deleted after it was read: its key is gone (23503), or the delete, which
        // locks the chat and then its replies, met this statement in the other order (40P01; any
        // other deadlock is not a missing chat).
        const code = (error as { code?: string }).code;
        if (code === '23503') throw problems.notFound('No such chat.');
        if (code === '40P01') await this.deps.chats.require(user, chat.id); // 404 when it is gone
        throw error;
      }),
      cacheKey ? this.deps.cache.get(cacheKey) : Promise.resolve(undefined),
    ]);
    if (!stored) {
      this.deps.metrics.quotaRejections.inc();
      throw new HttpProblem(429, 'quota_exceeded', `This reply may take up to ${reserved} tokens, more than what is left of your monthly token quota.`, {
        headers: { 'retry-after': String(secondsToNextMonth(answer.createdAt)) },
      });
    }
    if (context.summarized) this.deps.metrics.summarizedContexts.inc();
    if (truncated) this.deps.metrics.contextTruncations.inc();
    const assistant = stored.find((r) => r.id === answer.id)!;
    const userMessage = question ? stored.find((r) => r.id === question.id)! : existingQuestion!;

    if (options.async) {
      // The journal starts now, so the reply can be followed while the worker produces it.
      this.deps.streams.append(
        { seq: 1, type: 'message', data: messageEventData(userMessage, assistant.id), messageId: assistant.id, chatId: chat.id },
        user.sub,
      );
      return { userMessage, assistant };
    }
    const run = this.deps.runner.start({
      userMessage,
      assistant,
      modelId,
      request,
      promptTokens: context.promptTokens,
      quotaReserved: reserved,
      ...(cacheKey ? { cacheKey } : {}),
      ...(cached ? { cached } : {}),
    });
    return { userMessage, assistant, run };
  }

  /**
   * Stops a reply: the instance running it aborts the provider request at once (it is told
   * through Redis if it is another one) and stores it `cancelled` with what it produced. A reply
   * nobody runs any more (its instance died) is ended here; a queued one is cancelled before
   * the worker's result arrives. Cancelling a reply that already ended changes nothing.
   */
  async cancel(user: Identity, chatId: string, messageId: string): Promise<MessageRow> {
    return this.cancelReply(user, await this.require(user, chatId, messageId));
  }

  /** cancel() for a caller who knows the reply's id but not its chat (a WebSocket that has seen none of its events). */
  async cancelById(user: Identity, messageId: string): Promise<MessageRow> {
    const row = await this.repository.find(user.sub, undefined, messageId);
    if (!row) throw problems.notFound('No such reply.');
    return this.cancelReply(user, row);
  }

  private async cancelReply(user: Identity, row: MessageRow): Promise<MessageRow> {
    if (row.role !== 'assistant') throw problems.notFound('No such reply.');
    if (row.status === 'queued') return (await this.cancelQueued(row)) ?? (await this.require(user, row.chatId, row.id));
    if (row.status !== 'streaming') return row;
    if (this.deps.runner.cancelLocal(row.id)) return row;
    let alive = true;
    try {
      await this.deps.streams.publishCancel(row.id);
      [alive = true] = await this.deps.streams.leasesAlive([row.id]);
    } catch (error) {
      this.deps.log.warn({ err: error, messageId: row.id }, 'cannot relay a cancel through Redis');
    }
    if (!alive) return (await this.deps.sweeper.finalizeOrphan(row, 'cancelled')) ?? row;
    return row;
  }

  /**
   * A queued reply ends `cancelled` at once, and the worker is told to stop: it aborts the provider
   * call if it is making it, or skips the job when it comes to it. What the provider generated
   * before the abort is added to the month's use when the worker's result arrives.
   */
  private async cancelQueued(row: MessageRow): Promise<MessageRow | undefined> {
    const now = new Date();
    const stored = await this.deps.sweeper.finalizeQueued(row, now);
    if (stored) {
      try {
        await this.deps.streams.publishCancel(row.id, QUEUED_CANCEL_FLAG_MS);
      } catch (error) {
        // The worker then produces the reply; its result is ignored, and its usage counted.
        this.deps.log.warn({ err: error, messageId: row.id }, 'cannot tell the worker about a cancel through Redis');
      }
    }
    return stored;
  }
}
