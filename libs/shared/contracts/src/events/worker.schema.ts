import { Type, type Static } from '@sinclair/typebox';
import { ErrorInfo, MessageStatus, ModelId, ProviderId, Timestamp, Usage, Uuid } from './common.schema.js';

// Payloads of `worker.events`: results of background jobs, applied by chat.

/**
 * A background reply ended. Chat stores it and then publishes `chat.message.completed`, which is
 * the event analytics count; do not count usage from this one.
 */
export const WorkerCompletionFinishedSchema = Type.Object(
  {
    assistantMessageId: Uuid(),
    chatId: Uuid(),
    userId: Uuid('the owner of the chat'),
    userMessageId: Uuid('the user message it answers'),
    status: MessageStatus,
    content: Type.String({ description: 'the reply text, partial when cancelled or failed' }),
    provider: ProviderId('provider that produced the reply (the last one tried when it failed)'),
    model: ModelId('model id used, `<provider>/<model>`, after alias resolution'),
    usage: Usage,
    latencyMs: Type.Integer({ minimum: 0 }),
    timeToFirstTokenMs: Type.Optional(Type.Integer({ minimum: 0 })),
    error: Type.Optional(ErrorInfo),
  },
  { additionalProperties: false },
);
export type WorkerCompletionFinishedData = Static<typeof WorkerCompletionFinishedSchema>;

export const WorkerTitleGeneratedSchema = Type.Object(
  {
    chatId: Uuid(),
    userId: Uuid('the owner of the chat'),
    title: Type.String({ minLength: 1, maxLength: 200 }),
  },
  { additionalProperties: false },
);
export type WorkerTitleGeneratedData = Static<typeof WorkerTitleGeneratedSchema>;

/** The longest summary the worker publishes (characters). */
export const SUMMARY_MAX_CHARS = 16_000;

export const WorkerSummaryGeneratedSchema = Type.Object(
  {
    chatId: Uuid(),
    userId: Uuid('the owner of the chat'),
    summary: Type.String({ minLength: 1, maxLength: SUMMARY_MAX_CHARS, description: 'the conversation up to and including `throughMessageId`, summarised' }),
    throughMessageId: Uuid('the newest message the summary covers'),
    throughCreatedAt: Timestamp('when that message was created: summaries of one chat are ordered by it'),
    model: ModelId('the model that wrote the summary'),
  },
  { additionalProperties: false },
);
export type WorkerSummaryGeneratedData = Static<typeof WorkerSummaryGeneratedSchema>;

export const WorkerExportReadySchema = Type.Object(
  {
    exportId: Uuid(),
    userId: Uuid(),
    objectKey: Type.String({
      minLength: 1,
      maxLength: 1024,
      description: 'S3 object key; the API signs a short-lived URL on request (no URL in the event)',
    }),
    sizeBytes: Type.Integer({ minimum: 0 }),
    expiresAt: Timestamp('when the export is deleted'),
  },
  { additionalProperties: false },
);
export type WorkerExportReadyData = Static<typeof WorkerExportReadySchema>;

export const WorkerExportFailedSchema = Type.Object(
  {
    exportId: Uuid(),
    userId: Uuid(),
    reason: Type.String({ minLength: 1, maxLength: 1000, description: 'shown to the user; no internals' }),
  },
  { additionalProperties: false },
);
export type WorkerExportFailedData = Static<typeof WorkerExportFailedSchema>;
