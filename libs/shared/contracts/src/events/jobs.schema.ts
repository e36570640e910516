import { Type, type Static } from '@sinclair/typebox';
import { ModelId, Nullable, StringEnum, Uuid } from './common.schema.js';

// Payloads of `jobs.completion` and `jobs.export`: work that chat hands to the worker.

export const CONTEXT_ROLES = ['user', 'assistant'] as const;

/**
 * A reply to produce in the background (`async: true`). Chat builds the context within the
 * model's token budget, as it does for a streamed reply, so the worker needs nothing else.
 */
export const JobsCompletionRequestedSchema = Type.Object(
  {
    chatId: Uuid(),
    userId: Uuid('the owner of the chat'),
    userMessageId: Uuid('the user message to answer'),
    assistantMessageId: Uuid('the queued assistant message the reply completes'),
    model: ModelId('requested model (an id or an alias)'),
    systemPrompt: Nullable(Type.String()),
    messages: Type.Array(
      Type.Object(
        {
          role: StringEnum(CONTEXT_ROLES),
          content: Type.String(),
        },
        { additionalProperties: false },
      ),
      { minItems: 1, description: 'the conversation context, oldest first, ending with the user message' },
    ),
    maxOutputTokens: Type.Optional(Type.Integer({ minimum: 1 })),
    regenerate: Type.Boolean({ description: 'a new reply to a user message that already has one' }),
  },
  { additionalProperties: false },
);
export type JobsCompletionRequestedData = Static<typeof JobsCompletionRequestedSchema>;

export const JobsExportRequestedSchema = Type.Object(
  {
    exportId: Uuid(),
    userId: Uuid('whose data to export'),
  },
  { additionalProperties: false },
);
export type JobsExportRequestedData = Static<typeof JobsExportRequestedSchema>;
