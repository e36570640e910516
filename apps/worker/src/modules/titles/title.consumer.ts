import { createEvent, EVENTS, type EventOf } from '@vivier/contracts';
import type { EventHandlers, HandlerContext, Publish } from '@vivier/messaging';
import type { ProviderRouter } from '@vivier/providers';
import type { FastifyBaseLogger } from 'fastify';
import { callProvider, ProviderCallFailure } from '../completions/provider-call';
import { chatTitleRepository } from './title.repository';

export interface TitleConsumerDeps {
  router: ProviderRouter;
  publish: Publish;
  logger: FastifyBaseLogger;
  /** TITLE_MODEL; empty = the chat's own model. */
  titleModel: string;
  maxAttempts: number;
}

const TITLE_MAX_CHARS = 80;
const TITLE_PROMPT =
  'Write a short title (at most six words) for a conversation that starts with the message below. ' +
  'Answer with the title only: no quotes, no punctuation at the end.';

/** A clean one-line title from a model's answer (or from the message itself as a fallback). */
export function cleanTitle(raw: string): string {
  const line = raw.split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? '';
  let title = line.replace(/^(title\s*:\s*)/i, '').replace(/^["'“”‘’*#\s]+|["'“”‘’*\s]+$/g, '').replace(/\s+/g, ' ');
  if (title.length > TITLE_MAX_CHARS) {
    const cut = title.slice(0, TITLE_MAX_CHARS);
    const space = cut.lastIndexOf(' ');
    title = `${(space > 20 ? cut.slice(0, space) : cut).replace(/[\s,.;:!?-]+$/, '')}…`;
  }
  title = title.replace(/[.!,;:]+$/, '');
  return title;
}

/**
 * `chat.events`: after a chat's first completed reply, write a title from its first message with
 * the chat's model (or TITLE_MODEL) and publish `title.generated`, once per chat. What a title is
 * written from is learnt from chat.created / message.created (worker.chat_titles); a chat the
 * user titled, or that was deleted, gets none. A reply that completes before the first message is
 * known (its message.created failed once and waits on a retry topic) is recorded, and the title
 * is written when that message arrives. The title is recorded in the transaction that
 * publishes it, so a redelivered or a second reply never makes another.
 */
export function titleHandlers(deps: TitleConsumerDeps): EventHandlers {
  const repo = chatTitleRepository();

  type ChatRow = NonNullable<Awaited<ReturnType<typeof repo.find>>>;

  /** Writes the chat's title from its first message and publishes it, unless it has one. */
  async function writeTitle(tx: HandlerContext['tx'], attempt: number, chat: ChatRow, replyModel: string): Promise<void> {
    const model = deps.titleModel || chat.model || replyModel;
    let title: string;
    try {
      const call = await callProvider(deps.router, model, [
        { role: 'system', content: TITLE_PROMPT },
        { role: 'user', content: chat.firstMessage! },
      ], { maxTokens: 24 });
      title = cleanTitle(call.content);
    } catch (error) {
      if (!(error instanceof ProviderCallFailure)) throw error;
      if (error.retryable && attempt < deps.maxAttempts) throw error;
      // A title is a nicety: rather than none, the start of the first message.
      deps.logger.warn({ err: error, chatId: chat.chatId }, 'title model failed; titling the chat from its first message');
      title = '';
    }
    if (!title) title = cleanTitle(chat.firstMessage!) || 'New chat';
    if (await repo.claimTitle(tx, chat.chatId, title)) {
      await deps.publish(tx, createEvent(EVENTS.workerTitleGenerated, { chatId: chat.chatId, userId: chat.userId, title }));
    }
  }

  const wantsTitle = (chat: ChatRow | undefined): chat is ChatRow =>
    chat !== undefined && !chat.titleGeneratedAt && !chat.titledByUser && !chat.deletedAt;

  async function messageCompleted(event: EventOf<typeof EVENTS.chatMessageCompleted>, { tx, attempt }: HandlerContext): Promise<void> {
    const data = event.data;
    if (data.status !== 'completed') return;
    const chat = await repo.find(tx, data.chatId);
    if (chat && !wantsTitle(chat)) return;
    if (!chat?.firstMessage?.trim()) {
      // Its message.created is behind it (a retried event): the title is written when it comes.
      deps.logger.info({ chatId: data.chatId }, 'reply completed before the first message is known; the title follows the message');
      await repo.replyCompleted(tx, { chatId: data.chatId, userId: data.userId, model: data.model });
      return;
    }
    await writeTitle(tx, attempt, chat, data.model);
  }

  return {
    'vivier.chat.chat.created.v1': async (event, { tx }) => {
      const d = event.data;
      await repo.chatCreated(tx, { chatId: d.chatId, userId: d.userId, model: d.model, titled: d.title !== null });
    },
    'vivier.chat.chat.updated.v1': async (event, { tx }) => {
      const d = event.data;
      await repo.chatUpdated(tx, {
        chatId: d.chatId,
        userId: d.userId,
        ...(d.changes.model === undefined ? {} : { model: d.changes.model }),
        titled: d.changes.title !== undefined,
      });
    },
    'vivier.chat.chat.deleted.v1': async (event, { tx }) => {
      await repo.chatDeleted(tx, event.data.chatId, event.data.userId);
    },
    'vivier.chat.message.created.v1': async (event, { tx, attempt }) => {
      const d = event.data;
      const chat = await repo.messageCreated(tx, { chatId: d.chatId, userId: d.userId, content: d.content, model: d.model });
      // A reply completed first (this event was retried): its title was waiting for this message.
      if (chat.replyCompletedAt && wantsTitle(chat) && chat.firstMessage?.trim()) await writeTitle(tx, attempt, chat, d.model);
    },
    'vivier.chat.message.completed.v1': messageCompleted,
  };
}
