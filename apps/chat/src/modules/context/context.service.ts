import { HttpProblem } from '@vivier/service-kit';
import { countTokens, IMAGE_TOKENS, type ChatMessage, type ContentPart } from '@vivier/providers';
import type { HistoryRow } from '../messages/messages.repository';
import type { TurnsRepository } from '../messages/turns.repository';
import type { FileRow } from '../files/files.repository';
import type { ContextAttachment, FilesService } from '../files/files.service';
import { isImage } from '../files/files.service';

/** Per-message framing and the reply primer, as OpenAI counts chat tokens (and as the budget does). */
const TOKENS_PER_MESSAGE = 4;
const REPLY_PRIMER = 3;
/** History is read newest first in batches growing from this size (×4 each), until the budget is spent. */
export const FIRST_HISTORY_BATCH = 48;
const MAX_HISTORY_BATCH = 3072;

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
  /** History messages left out because the window was full. */
  omitted: number;
  /** How many history messages made it in. */
  included: number;
}

/**
 * Builds what a reply is asked with: the chat's system prompt, then the newest history that fits
 * the model's context window minus the output budget, then the message being answered. Whole
 * messages only: the first one that does not fit ends the history (older ones are left out too,
 * so the model never sees a conversation with holes in it). Token counts of stored messages
 * come from their `context_tokens` column, so a long chat costs a few indexed reads (batches grow
 * ×4) and no re-tokenising.
 */
export class ContextBuilder {
  constructor(private readonly deps: { turns: TurnsRepository; files: FilesService }) {}

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
    /** The first batch (FIRST_HISTORY_BATCH newest messages), when the caller read it already. */
    firstBatch?: HistoryRow[];
  }): Promise<BuiltContext> {
    const maxTokens = ContextBuilder.outputBudget(input.contextWindow, input.maxOutputTokens);
    const budget = input.contextWindow - maxTokens;
    const systemTokens = input.systemPrompt ? (await countTokens(input.systemPrompt)) + TOKENS_PER_MESSAGE : 0;
    let used = REPLY_PRIMER + systemTokens + input.current.contextTokens + TOKENS_PER_MESSAGE;
    if (used > budget) {
      throw new HttpProblem(
        400,
        'context_length_exceeded',
        `The message (with its attachments and the system prompt) takes about ${used} tokens; the model's window leaves ${budget} for input.`,
      );
    }

    const chosen: HistoryRow[] = [];
    const answered = new Set<string>();
    let omitted = 0;
    let cursor = input.before;
    let full = false;
    let size = FIRST_HISTORY_BATCH;
    while (!full) {
      const batch =
        size === FIRST_HISTORY_BATCH && input.firstBatch && !input.before
          ? input.firstBatch
          : await this.deps.turns.historyBatch(input.chatId, cursor, size);
      for (const row of batch) {
        if (full) {
          omitted += 1;
          continue;
        }
        if (row.role === 'assistant') {
          // Replies in flight, failed ones and older regenerations of one question stay out.
          if ((row.status !== 'completed' && row.status !== 'cancelled') || row.content.length === 0) continue;
          if (row.replyTo) {
            if (answered.has(row.replyTo)) continue;
            answered.add(row.replyTo);
          }
        }
        const cost = row.contextTokens + TOKENS_PER_MESSAGE;
        if (used + cost > budget) {
          full = true;
          omitted += 1;
          continue;
        }
        used += cost;
        chosen.push(row);
      }
      if (batch.length < size) break;
      const last = batch[batch.length - 1]!;
      cursor = { id: last.id, createdAt: last.createdAt };
      size = Math.min(size * 4, MAX_HISTORY_BATCH);
    }
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
    if (input.systemPrompt) messages.push({ role: 'system', content: input.systemPrompt });
    for (const row of chosen) {
      const attached = row.attachments
        .map((id) => files.get(id))
        .filter((f): f is FileRow => f !== undefined)
        .map((f) => ({ name: f.name, contentType: f.contentType, ...(f.textContent !== null ? { text: f.textContent } : {}) }));
      messages.push({ role: row.role, content: attached.length > 0 ? composeText(row.content, attached) : row.content });
    }
    messages.push({ role: 'user', content: currentContent(input.current) });
    return { messages, promptTokens: used, maxTokens, omitted, included: chosen.length };
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
