import { createEvent, cutText, EVENTS, type EventOf } from '@vivier/contracts';
import type { EventHandlers, HandlerContext, Publish } from '@vivier/messaging';
import type { ProviderRouter } from '@vivier/providers';
import type { FastifyBaseLogger } from 'fastify';
import { callProvider, ProviderCallFailure } from '../completions/provider-call';
import { chatTitleRepository, FIRST_MESSAGE_CHARS } from './title.repository';

export interface TitleConsumerDeps {
  router: ProviderRouter;
  publish: Publish;
  logger: FastifyBaseLogger;
  /** TITLE_MODEL; empty = the chat's own model. */
  titleModel: string;
  /** TITLE_TIMEOUT_MS: one title call's budget. A hung provider must not hold the partition (and its pooled connection) for the transport's 10 minutes. */
  titleTimeoutMs: number;
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
    const cut = cutText(title, TITLE_MAX_CHARS);
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

  type ChatRow = Awaited<ReturnType<typeof repo.messageCreated>>;

  /**
   * The title of a conversation that starts with `firstMessage`: the model's, or the start of the
   * message when the model fails for good. Called before the handler writes anything, so the
   * transaction holds no id (nor row lock) while the model answers, and no outbox waits on it.
   */
  async function titleFor(chatId: string, model: string, firstMessage: string, mayRetry: boolean): Promise<string> {
    let title = '';
    try {
      const call = await callProvider(deps.router, model, [
        { role: 'system', content: TITLE_PROMPT },
        { role: 'user', content: firstMessage },
      ], { maxTokens: 24, timeoutMs: deps.titleTimeoutMs });
      title = cleanTitle(call.content);
    } catch (error) {
      if (!(error instanceof ProviderCallFailure)) throw error;
      if (error.retryable && mayRetry) throw error;
      // A title is a nicety: rather than none, the start of the first message.
      deps.logger.warn({ err: error, chatId }, 'title model failed; titling the chat from its first message');
    }
    return title || cleanTitle(firstMessage) || 'New chat';
  }

  /** Records the title and publishes it, unless the chat got one (or a user title) meanwhile. */
  async function publishTitle(tx: HandlerContext['tx'], chat: { chatId: string; userId: string }, title: string): Promise<void> {
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
      const recorded = await repo.replyCompleted(tx, { chatId: data.chatId, userId: data.userId, model: data.model });
      // Unless it was handled (on another partition) between the read above and this write: then
      // this event is retried, and finds the message.
      if (wantsTitle(recorded) && recorded.firstMessage?.trim()) throw new Error('the chat\'s first message arrived meanwhile; retrying to title it');
      deps.logger.info({ chatId: data.chatId }, 'reply completed before the first message is known; the title follows the message');
      return;
    }
    const title = await titleFor(chat.chatId, deps.titleModel || chat.model || data.model, chat.firstMessage, attempt < deps.maxAttempts);
    await publishTitle(tx, chat, title);
  }

  async function messageCreated(event: EventOf<typeof EVENTS.chatMessageCreated>, { tx }: HandlerContext): Promise<void> {
    const d = event.data;
    const before = await repo.find(tx, d.chatId);
    // A reply completed first (this event was retried): its title waited for this message. It is
    // written from this message at once (no retry of the model: the message must not wait again).
    const late = before?.replyCompletedAt && wantsTitle(before) && !before.firstMessage?.trim() && d.content.trim() !== '';
    const title = late
      ? await titleFor(d.chatId, deps.titleModel || before.model || d.model, d.content.slice(0, FIRST_MESSAGE_CHARS), false)
      : undefined;
    const chat = await repo.messageCreated(tx, { chatId: d.chatId, userId: d.userId, content: d.content, model: d.model });
    if (title !== undefined) return publishTitle(tx, chat, title);
    // A reply recorded (on another partition) between the read above and this write: retried, this
    // event takes the path above.
    if (chat.replyCompletedAt && !before?.replyCompletedAt && wantsTitle(chat) && chat.firstMessage?.trim())
      throw new Error('a reply of this chat completed meanwhile; retrying to title it');
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
    'vivier.chat.message.created.v1': messageCreated,
    'vivier.chat.message.completed.v1': messageCompleted,
  };
}
