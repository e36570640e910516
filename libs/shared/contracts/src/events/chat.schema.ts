import { Type, type Static } from '@sinclair/typebox';
import {
  ErrorInfo,
  MessageStatus,
  ModelId,
  Nullable,
  ProviderId,
  Timestamp,
  Usage,
  Uuid,
} from './common.schema.js';

// Payloads of `chat.events`, produced by chat, keyed by chat id so one chat's events stay in order.

const Title = Type.String({ minLength: 1, maxLength: 200 });

export const ChatCreatedSchema = Type.Object(
  {
    chatId: Uuid(),
    userId: Uuid('the owner'),
    title: Nullable(Title, { description: 'null until one is given or generated' }),
    model: ModelId('model chosen for the chat (an id or an alias)'),
    createdAt: Timestamp(),
  },
  { additionalProperties: false },
);
export type ChatCreatedData = Static<typeof ChatCreatedSchema>;

export const ChatUpdatedSchema = Type.Object(
  {
    chatId: Uuid(),
    userId: Uuid('the owner'),
    changes: Type.Object(
      {
        title: Type.Optional(Title),
        model: Type.Optional(ModelId('model chosen for the chat (an id or an alias)')),
        archived: Type.Optional(Type.Boolean()),
        systemPromptChanged: Type.Optional(
          Type.Literal(true, { description: 'the system prompt changed (its text is not in the event)' }),
        ),
      },
      { additionalProperties: false, minProperties: 1, description: 'the new values of what changed' },
    ),
    updatedAt: Timestamp(),
  },
  { additionalProperties: false },
);
export type ChatUpdatedData = Static<typeof ChatUpdatedSchema>;

export const ChatDeletedSchema = Type.Object(
  {
    chatId: Uuid(),
    userId: Uuid('the owner'),
    deletedAt: Timestamp(),
  },
  { additionalProperties: false },
);
export type ChatDeletedData = Static<typeof ChatDeletedSchema>;

/** A message the user sent (assistant replies are `message.completed`). */
export const ChatMessageCreatedSchema = Type.Object(
  {
    chatId: Uuid(),
    userId: Uuid('the author'),
    messageId: Uuid(),
    content: Type.String({ description: 'the text the user sent' }),
    attachmentIds: Type.Array(Uuid(), { maxItems: 100, uniqueItems: true, description: 'uploaded files' }),
    model: ModelId('model the reply was requested from (an id or an alias)'),
    createdAt: Timestamp(),
  },
  { additionalProperties: false },
);
export type ChatMessageCreatedData = Static<typeof ChatMessageCreatedSchema>;

/**
 * An assistant reply reached its final status. The one source of usage for analytics and quotas:
 * async replies finished by the worker are published here too, once chat has stored them.
 */
export const ChatMessageCompletedSchema = Type.Object(
  {
    chatId: Uuid(),
    userId: Uuid('the owner of the chat, who is charged'),
    messageId: Uuid('the assistant message'),
    userMessageId: Uuid('the user message it answers'),
    status: MessageStatus,
    provider: ProviderId('provider that produced the reply (the last one tried when it failed)'),
    model: ModelId('model id used, `<provider>/<model>`, after alias resolution'),
    usage: Usage,
    latencyMs: Type.Integer({ minimum: 0, description: 'from request to the last token' }),
    timeToFirstTokenMs: Type.Optional(
      Type.Integer({ minimum: 0, description: 'absent when no token arrived' }),
    ),
    cached: Type.Boolean({ description: 'answered from the response cache (no provider call)' }),
    error: Type.Optional(ErrorInfo),
    completedAt: Timestamp(),
  },
  { additionalProperties: false },
);
export type ChatMessageCompletedData = Static<typeof ChatMessageCompletedSchema>;

export const ChatMessageUsageRecordedSchema = Type.Object(
  {
    chatId: Uuid(),
    userId: Uuid('the owner of the chat, who is charged'),
    messageId: Uuid('the assistant message whose `message.completed` has gone without these tokens'),
    provider: ProviderId('provider that generated them'),
    model: ModelId('model id used, `<provider>/<model>`'),
    usage: Usage,
    recordedAt: Timestamp(),
  },
  { additionalProperties: false },
);
export type ChatMessageUsageRecordedData = Static<typeof ChatMessageUsageRecordedSchema>;

export const ChatContextTruncatedSchema = Type.Object(
  {
    chatId: Uuid(),
    userId: Uuid('the owner of the chat'),
    messageId: Uuid('the user message whose reply was asked with less than the whole conversation'),
    model: ModelId('the model the reply was asked of (an id or an alias): its window was full'),
    omittedMessages: Type.Integer({ minimum: 1, description: "history messages left out that the chat's summary does not cover" }),
    historyBudget: Type.Integer({
      minimum: 0,
      description: 'tokens the history could take in that context, beside the system message (with the summary) and the message answered',
    }),
    truncatedAt: Timestamp(),
  },
  { additionalProperties: false },
);
export type ChatContextTruncatedData = Static<typeof ChatContextTruncatedSchema>;
