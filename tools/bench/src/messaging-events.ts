import { randomUUID } from 'node:crypto';
import { createEvent, EVENTS, type AnyEvent } from '@vivier/contracts';

/** The messaging benchmark's event: a chat message, keyed by its chat. */
export function chatMessageEvent(chatId: string, i: number | string): AnyEvent {
  return createEvent(EVENTS.chatMessageCreated, {
    chatId,
    userId: chatId,
    messageId: randomUUID(),
    content: `message ${i}`,
    attachmentIds: [],
    model: 'sim/fast',
    createdAt: new Date().toISOString(),
  });
}
