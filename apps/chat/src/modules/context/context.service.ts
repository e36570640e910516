import { HttpProblem } from '@vivier/service-kit';
import { countRecurringTokens, countTokens, IMAGE_TOKENS, type ChatMessage, type ContentPart } from '@vivier/providers';
import type { HistoryRow } from '../messages/messages.repository';
import type { TurnsRepository } from '../messages/turns.repository';
import type { FileRow } from '../files/files.repository';
import type { ContextAttachment, FilesService } from '../files/files.service';
import { isImage } from '../files/files.service';

/** Per-message framing and the reply primer, as OpenAI counts chat tokens (and as the budget does). */
export const TOKENS_PER_MESSAGE = 4;
const REPLY_PRIMER = 3;
/** History is read newest first, from this many messages in a chat this instance has not built a context for yet. */
const FIRST_HISTORY_BATCH = 48;
const MAX_HISTORY_BATCH = 3072;
/** Chats whose last context size this instance remembers (most recently used kept). */
const REMEMBERED_CHATS = 20_000;

/** The text a model sees for a message: what the user wrote, then each attached text file. */
export function composeText(content: string, attachments: Array<Pick<ContextAttachment, 'name' | 'contentType' | 'text' | 'image'>>): string {
  let text = content;
  for (const file of attachments) {
    if (file.image !== undefined || isImage(file.contentType)) {
      text += `\n\n[Attached image: ${file.name}]`;
    } else {
      text += `\n\n--- Attached file: ${file.name} (${file.contentType}) ---\n${file.text ?? ''}\n--- End of ${file.name} ---`;
    }
  }
  return text;
}

/** What a context says before a chat's summary (the summary follows on the next line). */
const SUMMARY_HEADING = 'Summary of the earlier part of this conversation (those messages are not shown):';

/** The text a summary takes in a context (its token count is stored with it). */
export function summaryBlock(summary: string): string {
  return `${SUMMARY_HEADING}\n${summary}`;
}

/** A chat's stored summary: the conversation through message `throughId`, and its tokens as `summaryBlock`. */
export interface ChatSummary {
  text: string;
  tokens: number;
  throughId: string;
  throughAt: Date;
}

/** Whether a history row is at or before a summary's last message (so the summary stands for it). */
export function coveredBy(summary: Pick<ChatSummary, 'throughId' | 'throughAt'>, row: Pick<HistoryRow, 'id' | 'createdAt'>): boolean {
  // Walking newest first meets the summary's own message first; the time is for a message gone since.
  if (row.id === summary.throughId) return true;
  const at = Date.parse(row.createdAt);
  return Number.isFinite(at) && at < summary.throughAt.getTime();
}

/**
 * Which history rows a model is shown, read newest first: user messages, and of the replies only
 * ended ones with text (not one in flight, not a failed one), and of several replies to one
 * question (regenerations) only the newest. `answered` carries what was seen across batches.
 */
export function shownInContext(row: Pick<HistoryRow, 'role' | 'status' | 'content' | 'replyTo'>, answered: Set<string>): boolean {
  if (row.role !== 'assistant') return true;
  if ((row.status !== 'completed' && row.status !== 'cancelled') || row.content.length === 0) return false;
  if (row.replyTo) {
    if (answered.has(row.replyTo)) return false;
    answered.add(row.replyTo);
  }
  return true;
}

/** composeText() of a stored message, with the files it was sent with (`files`: at least those, by id). */
export function storedText(row: Pick<HistoryRow, 'content' | 'attachments'>, files: Map<string, FileRow>): string {
  const attached = row.attachments
    .map((id) => files.get(id))
    .filter((f): f is FileRow => f !== undefined)
    .map((f) => ({ name: f.name, contentType: f.contentType, ...(f.textContent !== null ? { text: f.textContent } : {}) }));
  return attached.length > 0 ? composeText(row.content, attached) : row.content;
}

export interface CurrentMessage {
  content: string;
  attachments: ContextAttachment[];
  /** Tokens of `composeText(content, attachments)` plus the images. */
  contextTokens: number;
}

export interface BuiltContext {
  messages: ChatMessage[];
  /** Tokens of `messages` as counted for the budget (what the quota reserves for the prompt). */
  promptTokens: number;
  /** Output cap sent to the provider. */
  maxTokens: number;
  /** History messages left out because the window was full, and not covered by the chat's summary. */
  omitted: number;
  /** The chat's summary stands in for its older messages in this context. */
  summarized: boolean;
  /** Tokens the history could take beside the system message (with the summary) and the message answered. */
  historyBudget: number;
  /** How many history messages made it in. */
  included: number;
}

/**
 * Builds what a reply is asked with: the chat's system prompt (with the chat's summary of its older
 * messages, when it has one), then the newest history that fits the model's context window minus
 * the output budget, then the message being answered. Whole messages only: the first one that does
 * not fit ends the history (older ones are left out too, so the model never sees a conversation
 * with holes in it). History stops at the summary's last message: the summary stands for the rest.
 * Token counts of stored messages come from their `context_tokens` column, so a long chat costs one
 * indexed read (two the first time this instance builds one for it, see firstBatchSize) and no
 * re-tokenising.
 */
export class ContextBuilder {
  /**
   * How many history messages the last context of a chat looked at, most recently used last. A
   * conversation's next turn needs about as many (the window moves by the last turn's two
   * messages), so its first read can take them all in the same round trip as the chat itself.
   * Only a hint: a wrong one costs one more read, and each instance learns its own.
   */
  private readonly lastLooked = new Map<string, number>();

  constructor(private readonly deps: { turns: TurnsRepository; files: FilesService }) {}

  /** How many of the newest messages to read with the chat for its next context. */
  firstBatchSize(chatId: string): number {
    const looked = this.lastLooked.get(chatId);
    if (looked === undefined) return FIRST_HISTORY_BATCH;
    return Math.min(MAX_HISTORY_BATCH, Math.max(FIRST_HISTORY_BATCH, Math.ceil(looked * 1.1) + 8));
  }

  private remember(chatId: string, looked: number): void {
    this.lastLooked.delete(chatId);
    this.lastLooked.set(chatId, looked);
    if (this.lastLooked.size > REMEMBERED_CHATS) this.lastLooked.delete(this.lastLooked.keys().next().value!);
  }

  static async countCurrent(content: string, attachments: ContextAttachment[]): Promise<number> {
    const images = attachments.filter((a) => a.image !== undefined).length;
    return (await countTokens(composeText(content, attachments))) + images * IMAGE_TOKENS;
  }

  /** The output budget: what was asked (or the default), never more than half the window. */
  static outputBudget(contextWindow: number, requested: number): number {
    return Math.max(1, Math.min(requested, Math.floor(contextWindow / 2)));
  }

  async build(input: {
    chatId: string;
    userId: string;
    systemPrompt: string | null;
    /** History strictly before this message (regenerate); all of it when absent (send). */
    before?: { id: string; createdAt: Date };
    current: CurrentMessage;
    contextWindow: number;
    maxOutputTokens: number;
    /** The newest `limit` messages (see firstBatchSize), when the caller read them already. */
    firstBatch?: { rows: HistoryRow[]; limit: number };
    /** The chat's summary of its older messages, if it has one. */
    summary?: ChatSummary;
  }): Promise<BuiltContext> {
    const maxTokens = ContextBuilder.outputBudget(input.contextWindow, input.maxOutputTokens);
    const budget = input.contextWindow - maxTokens;
    // The system prompt is the same every turn: its count is remembered, not re-encoded.
    const systemTokens = input.systemPrompt ? (await countRecurringTokens(input.systemPrompt)) + TOKENS_PER_MESSAGE : 0;
    let used = REPLY_PRIMER + systemTokens + input.current.contextTokens + TOKENS_PER_MESSAGE;
    if (used > budget) {
      throw new HttpProblem(
        400,
        'context_length_exceeded',
        `The message (with its attachments and the system prompt) takes about ${used} tokens; the model's window leaves ${budget} for input.`,
      );
    }
    // The summary goes into the system message (one, as every provider takes it), and history stops
    // at its last message. Not for a regenerate of a message it covers (it would tell of what came
    // after). One that does not fit beside the message is left out, and so are the messages it
    // covers: they would not fit either, and they are not history the window has newly lost.
    const coverage = input.summary && (!input.before || input.before.createdAt.getTime() > input.summary.throughAt.getTime()) ? input.summary : undefined;
    const summaryCost = coverage ? coverage.tokens + (input.systemPrompt ? 0 : TOKENS_PER_MESSAGE) : 0;
    const summary = coverage && used + summaryCost <= budget ? coverage : undefined;
    if (summary) used += summaryCost;
    const historyBudget = budget - used;

    const chosen: HistoryRow[] = [];
    const answered = new Set<string>();
    let omitted = 0;
    let cursor: { id: string; createdAt: Date | string } | undefined = input.before;
    let full = false;
    const given = input.before ? undefined : input.firstBatch;
    let size = given?.limit ?? this.firstBatchSize(input.chatId);
    let looked = 0;
    let readCost = 0;
    let read = 0;
    for (let first = true; !full; first = false) {
      const batch = first && given ? given.rows : await this.deps.turns.historyBatch(input.chatId, cursor, size);
      read += batch.length;
      let covered = false;
      for (const row of batch) {
        if (coverage && coveredBy(coverage, row)) {
          covered = true;
          break;
        }
        readCost += row.contextTokens + TOKENS_PER_MESSAGE;
        if (full) {
          omitted += 1;
          continue;
        }
        looked += 1;
        // Replies in flight, failed ones and older regenerations of one question stay out.
        if (!shownInContext(row, answered)) continue;
        const cost = row.contextTokens + TOKENS_PER_MESSAGE;
        if (used + cost > budget) {
          full = true;
          omitted += 1;
          continue;
        }
        used += cost;
        chosen.push(row);
      }
      if (covered || batch.length < size) break;
      const last = batch[batch.length - 1]!;
      cursor = { id: last.id, createdAt: last.createdAt };
      // Enough for what is left of the budget at the size of the messages read so far, and a
      // quarter more: one more read as a rule, not four times what fits.
      const perMessage = Math.max(1, readCost / read);
      size = Math.min(MAX_HISTORY_BATCH, Math.max(FIRST_HISTORY_BATCH, Math.ceil(((budget - used) / perMessage) * 1.25) + 8));
    }
    if (!input.before) this.remember(input.chatId, looked);
    chosen.reverse();
    // Providers want a conversation to open with the user.
    while (chosen[0]?.role === 'assistant') {
      used -= chosen[0].contextTokens + TOKENS_PER_MESSAGE;
      chosen.shift();
      omitted += 1;
    }

    const attachmentIds = [...new Set(chosen.flatMap((row) => row.attachments))];
    const files = attachmentIds.length > 0 ? await this.deps.files.texts(input.userId, attachmentIds) : new Map<string, FileRow>();
    const messages: ChatMessage[] = [];
    const system = [input.systemPrompt, summary ? summaryBlock(summary.text) : null].filter((part): part is string => !!part);
    if (system.length > 0) messages.push({ role: 'system', content: system.join('\n\n') });
    for (const row of chosen) messages.push({ role: row.role, content: storedText(row, files) });
    messages.push({ role: 'user', content: currentContent(input.current) });
    return { messages, promptTokens: used, maxTokens, omitted, included: chosen.length, summarized: summary !== undefined, historyBudget };
  }
}

/** The message being answered: text parts, plus image parts for its images. */
function currentContent(current: CurrentMessage): ChatMessage['content'] {
  const text = composeText(current.content, current.attachments);
  const images = current.attachments.filter((a) => a.image !== undefined);
  if (images.length === 0) return text;
  const parts: ContentPart[] = [{ type: 'text', text }];
  for (const image of images) parts.push({ type: 'image', mediaType: image.contentType, data: image.image! });
  return parts;
}
