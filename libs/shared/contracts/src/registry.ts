import { defineEvent, type AnyEventDefinition, type EventData } from './event-definition.js';
import type { EventEnvelope } from './envelope.js';
import {
  AdminProviderConfiguredSchema,
  AdminQuotaSetSchema,
  AdminUserDisabledSchema,
  AdminUserEnabledSchema,
  AdminUserRoleChangedSchema,
} from './events/admin.schema.js';
import {
  AuthApiKeyCreatedSchema,
  AuthApiKeyRevokedSchema,
  AuthLoginFailedSchema,
  AuthMfaDisabledSchema,
  AuthMfaEnabledSchema,
  AuthOperationFailedSchema,
  AuthSessionRefreshedSchema,
  AuthSessionRevokedSchema,
  AuthUserLoggedInSchema,
  AuthUserRegisteredSchema,
  AuthUserUpdatedSchema,
} from './events/auth.schema.js';
import {
  ChatCreatedSchema,
  ChatDeletedSchema,
  ChatMessageCompletedSchema,
  ChatMessageCreatedSchema,
  ChatMessageUsageRecordedSchema,
  ChatContextTruncatedSchema,
  ChatUpdatedSchema,
} from './events/chat.schema.js';
import { JobsCompletionRequestedSchema, JobsExportRequestedSchema } from './events/jobs.schema.js';
import {
  WorkerCompletionFinishedSchema,
  WorkerExportFailedSchema,
  WorkerExportReadySchema,
  WorkerSummaryGeneratedSchema,
  WorkerTitleGeneratedSchema,
} from './events/worker.schema.js';
import { TOPICS, type Topic } from './topics.js';

// Every event type of the platform. An event type string is a contract: never rename or change
// one incompatibly. Add `.v2` next to `.v1`, publish both or migrate producers, let consumers
// handle both side by side, then retire `.v1` (see README.md).

// Fixed ids for the examples, so the generated AsyncAPI document is stable.
const ID = {
  user: '5b0c1f8e-3a52-4d7b-9c1e-2f6a8d4b7e01',
  admin: '9d3e6a41-7c2b-4f80-a5d9-0e1b2c3d4e02',
  session: 'c7a1e2f3-4b5c-4d6e-8f70-8192a3b4c503',
  apiKey: 'e4f5a6b7-c8d9-4eaf-b0c1-d2e3f4a5b604',
  chat: '1f2e3d4c-5b6a-4798-8a7b-6c5d4e3f2a05',
  userMessage: '2a3b4c5d-6e7f-4081-9a2b-3c4d5e6f7a06',
  assistantMessage: '3b4c5d6e-7f80-4192-a3b4-c5d6e7f8a907',
  file: '4c5d6e7f-8091-42a3-b4c5-d6e7f8a9b008',
  export: '5d6e7f80-91a2-43b4-85d6-e7f8a9b0c109',
} as const;
const ACTOR = {
  userId: ID.user,
  ip: '203.0.113.7',
  userAgent: 'Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0',
};
const ADMIN_ACTOR = {
  userId: ID.admin,
  ip: '198.51.100.20',
  userAgent: 'Mozilla/5.0 (Macintosh) Safari/18.0',
};
const USER_KEY = 'userId: events of one user stay in order';
const CHAT_KEY = 'chatId: events of one chat stay in order';

export const EVENTS = {
  // auth.events ------------------------------------------------------------------------------
  authUserRegistered: defineEvent({
    type: 'vivier.auth.user.registered.v1',
    topic: TOPICS.authEvents,
    schema: AuthUserRegisteredSchema,
    description: 'A user account was created (password sign-up or first OIDC login).',
    key: (d) => d.userId,
    keyDescription: USER_KEY,
    subject: (d) => d.userId,
    example: {
      actor: { ip: ACTOR.ip, userAgent: ACTOR.userAgent },
      userId: ID.user,
      email: 'ada@example.com',
      name: 'Ada',
      role: 'user',
      method: 'password',
    },
  }),
  authUserUpdated: defineEvent({
    type: 'vivier.auth.user.updated.v1',
    topic: TOPICS.authEvents,
    schema: AuthUserUpdatedSchema,
    description: "A user's profile, role or password changed.",
    key: (d) => d.userId,
    keyDescription: USER_KEY,
    subject: (d) => d.userId,
    example: { actor: ACTOR, userId: ID.user, changes: { name: 'Ada Lovelace', passwordChanged: true } },
  }),
  authUserLoggedIn: defineEvent({
    type: 'vivier.auth.user.logged_in.v1',
    topic: TOPICS.authEvents,
    schema: AuthUserLoggedInSchema,
    description: 'A user signed in and a session started.',
    key: (d) => d.userId,
    keyDescription: USER_KEY,
    subject: (d) => d.userId,
    example: { actor: ACTOR, userId: ID.user, sessionId: ID.session, method: 'password', mfaMethod: 'totp' },
  }),
  authLoginFailed: defineEvent({
    type: 'vivier.auth.login.failed.v1',
    topic: TOPICS.authEvents,
    schema: AuthLoginFailedSchema,
    description: 'A sign-in attempt failed. Carries the attempted email, never the password or code.',
    key: (d) => d.userId ?? d.email ?? 'anonymous',
    keyDescription: "userId of the account, else the attempted email, else 'anonymous'",
    subject: (d) => d.userId ?? d.email ?? 'anonymous',
    example: {
      actor: { ip: ACTOR.ip, userAgent: ACTOR.userAgent },
      email: 'ada@example.com',
      userId: ID.user,
      method: 'password',
      reason: 'invalid_password',
    },
  }),
  authSessionRefreshed: defineEvent({
    type: 'vivier.auth.session.refreshed.v1',
    topic: TOPICS.authEvents,
    schema: AuthSessionRefreshedSchema,
    description: 'A refresh token was exchanged for a new access token (and its successor) in a session.',
    key: (d) => d.userId,
    keyDescription: USER_KEY,
    subject: (d) => d.userId,
    example: { actor: ACTOR, userId: ID.user, sessionId: ID.session, rotated: true },
  }),
  authOperationFailed: defineEvent({
    type: 'vivier.auth.operation.failed.v1',
    topic: TOPICS.authEvents,
    schema: AuthOperationFailedSchema,
    description:
      'An auth operation other than sign-in was refused: a refresh, a registration, a password change, turning MFA on or off, an API key. ' +
      'Carries no password, token or code.',
    // Refusals of no known account (guessed tokens and keys) spread over the partitions by client.
    key: (d) => d.userId ?? d.email ?? (d.actor.ip ? `ip:${d.actor.ip}` : 'anonymous'),
    keyDescription: "userId of the account, else the email given, else 'ip:<client address>', else 'anonymous'",
    subject: (d) => d.userId ?? d.email ?? 'anonymous',
    example: { actor: { ip: ACTOR.ip, userAgent: ACTOR.userAgent }, operation: 'refresh', reason: 'invalid_token' },
  }),
  authSessionRevoked: defineEvent({
    type: 'vivier.auth.session.revoked.v1',
    topic: TOPICS.authEvents,
    schema: AuthSessionRevokedSchema,
    description:
      'Sessions ended (logout, logout-all, token reuse, disabled user, password change, revoked by the user). ' +
      'Open streams of these sessions must close.',
    key: (d) => d.userId,
    keyDescription: USER_KEY,
    subject: (d) => d.userId,
    example: {
      actor: ACTOR,
      userId: ID.user,
      reason: 'reuse_detected',
      sessionIds: [ID.session],
      familyId: ID.session,
    },
  }),
  authMfaEnabled: defineEvent({
    type: 'vivier.auth.mfa.enabled.v1',
    topic: TOPICS.authEvents,
    schema: AuthMfaEnabledSchema,
    description: 'A user turned on TOTP two-factor sign-in.',
    key: (d) => d.userId,
    keyDescription: USER_KEY,
    subject: (d) => d.userId,
    example: { actor: ACTOR, userId: ID.user, method: 'totp', recoveryCodesIssued: 10 },
  }),
  authMfaDisabled: defineEvent({
    type: 'vivier.auth.mfa.disabled.v1',
    topic: TOPICS.authEvents,
    schema: AuthMfaDisabledSchema,
    description: 'A user turned off TOTP two-factor sign-in.',
    key: (d) => d.userId,
    keyDescription: USER_KEY,
    subject: (d) => d.userId,
    example: { actor: ACTOR, userId: ID.user, method: 'totp' },
  }),
  authApiKeyCreated: defineEvent({
    type: 'vivier.auth.api_key.created.v1',
    topic: TOPICS.authEvents,
    schema: AuthApiKeyCreatedSchema,
    description: 'A user created an API key (the key itself is shown once, to the user only).',
    key: (d) => d.userId,
    keyDescription: USER_KEY,
    subject: (d) => d.apiKeyId,
    example: { actor: ACTOR, userId: ID.user, apiKeyId: ID.apiKey, name: 'laptop CLI' },
  }),
  authApiKeyRevoked: defineEvent({
    type: 'vivier.auth.api_key.revoked.v1',
    topic: TOPICS.authEvents,
    schema: AuthApiKeyRevokedSchema,
    description: 'An API key was revoked.',
    key: (d) => d.userId,
    keyDescription: USER_KEY,
    subject: (d) => d.apiKeyId,
    example: { actor: ACTOR, userId: ID.user, apiKeyId: ID.apiKey },
  }),

  // admin.events -----------------------------------------------------------------------------
  adminUserRoleChanged: defineEvent({
    type: 'vivier.admin.user.role_changed.v1',
    topic: TOPICS.adminEvents,
    schema: AdminUserRoleChangedSchema,
    description: "An administrator changed a user's role; auth enforces it.",
    key: (d) => d.userId,
    keyDescription: USER_KEY,
    subject: (d) => d.userId,
    example: { actor: ADMIN_ACTOR, userId: ID.user, role: 'admin', previousRole: 'user' },
  }),
  adminUserDisabled: defineEvent({
    type: 'vivier.admin.user.disabled.v1',
    topic: TOPICS.adminEvents,
    schema: AdminUserDisabledSchema,
    description: 'An administrator disabled a user; auth revokes every session, chat refuses new work.',
    key: (d) => d.userId,
    keyDescription: USER_KEY,
    subject: (d) => d.userId,
    example: { actor: ADMIN_ACTOR, userId: ID.user, reason: 'abuse report #42' },
  }),
  adminUserEnabled: defineEvent({
    type: 'vivier.admin.user.enabled.v1',
    topic: TOPICS.adminEvents,
    schema: AdminUserEnabledSchema,
    description: 'An administrator enabled a disabled user again.',
    key: (d) => d.userId,
    keyDescription: USER_KEY,
    subject: (d) => d.userId,
    example: { actor: ADMIN_ACTOR, userId: ID.user },
  }),
  adminQuotaSet: defineEvent({
    type: 'vivier.admin.quota.set.v1',
    topic: TOPICS.adminEvents,
    schema: AdminQuotaSetSchema,
    description: "An administrator set a user's monthly token quota (null: unlimited); chat enforces it.",
    key: (d) => d.userId,
    keyDescription: USER_KEY,
    subject: (d) => d.userId,
    example: { actor: ADMIN_ACTOR, userId: ID.user, monthlyTokens: 2_000_000 },
  }),
  adminProviderConfigured: defineEvent({
    type: 'vivier.admin.provider.configured.v1',
    topic: TOPICS.adminEvents,
    schema: AdminProviderConfiguredSchema,
    description:
      "A provider's configuration was created or changed: the full settings after the change. " +
      'The API key travels only encrypted (AES-256-GCM, bound to the provider id).',
    key: (d) => d.providerId,
    keyDescription: 'providerId: changes of one provider stay in order',
    subject: (d) => d.providerId,
    example: {
      actor: ADMIN_ACTOR,
      providerId: 'openai',
      kind: 'openai',
      enabled: true,
      baseUrl: null,
      models: ['gpt-4o-mini', 'gpt-4.1'],
      routing: { weight: 10, timeoutMs: 60_000, maxRetries: 2, fallbacks: ['anthropic'] },
      apiKeyEnvelope: {
        algorithm: 'aes-256-gcm',
        keyId: 'provider-keys-2025-01',
        iv: 'q83vEjRWeJq83vEj',
        ciphertext: 'oAnluGkdiV03cjkq2wpGEw1a6zNcCci6DAcjXUWQ6tQHESo=',
        tag: 'AAECAwQFBgcICQoLDA0ODw==',
      },
      revision: 3,
    },
  }),

  // chat.events ------------------------------------------------------------------------------
  chatCreated: defineEvent({
    type: 'vivier.chat.chat.created.v1',
    topic: TOPICS.chatEvents,
    schema: ChatCreatedSchema,
    description: 'A user created a chat.',
    key: (d) => d.chatId,
    keyDescription: CHAT_KEY,
    subject: (d) => d.chatId,
    example: {
      chatId: ID.chat,
      userId: ID.user,
      title: null,
      model: 'openai/gpt-4o-mini',
      createdAt: '2025-01-31T12:00:00.000Z',
    },
  }),
  chatUpdated: defineEvent({
    type: 'vivier.chat.chat.updated.v1',
    topic: TOPICS.chatEvents,
    schema: ChatUpdatedSchema,
    description: 'A chat was renamed, archived, or its model or system prompt changed.',
    key: (d) => d.chatId,
    keyDescription: CHAT_KEY,
    subject: (d) => d.chatId,
    example: {
      chatId: ID.chat,
      userId: ID.user,
      changes: { title: 'Trip to Lisbon', archived: false },
      updatedAt: '2025-01-31T12:05:00.000Z',
    },
  }),
  chatDeleted: defineEvent({
    type: 'vivier.chat.chat.deleted.v1',
    topic: TOPICS.chatEvents,
    schema: ChatDeletedSchema,
    description: 'A chat and its messages were deleted.',
    key: (d) => d.chatId,
    keyDescription: CHAT_KEY,
    subject: (d) => d.chatId,
    example: { chatId: ID.chat, userId: ID.user, deletedAt: '2025-02-01T08:00:00.000Z' },
  }),
  chatMessageCreated: defineEvent({
    type: 'vivier.chat.message.created.v1',
    topic: TOPICS.chatEvents,
    schema: ChatMessageCreatedSchema,
    description: 'A user sent a message in a chat.',
    key: (d) => d.chatId,
    keyDescription: CHAT_KEY,
    subject: (d) => d.messageId,
    example: {
      chatId: ID.chat,
      userId: ID.user,
      messageId: ID.userMessage,
      content: 'Plan three days in Lisbon, please.',
      attachmentIds: [ID.file],
      model: 'openai/gpt-4o-mini',
      createdAt: '2025-01-31T12:00:01.000Z',
    },
  }),
  chatMessageCompleted: defineEvent({
    type: 'vivier.chat.message.completed.v1',
    topic: TOPICS.chatEvents,
    schema: ChatMessageCompletedSchema,
    description:
      'An assistant reply was stored with its final status, usage, provider, model and latency. ' +
      'The source of usage analytics and quotas.',
    key: (d) => d.chatId,
    keyDescription: CHAT_KEY,
    subject: (d) => d.messageId,
    example: {
      chatId: ID.chat,
      userId: ID.user,
      messageId: ID.assistantMessage,
      userMessageId: ID.userMessage,
      status: 'completed',
      provider: 'openai',
      model: 'openai/gpt-4o-mini',
      usage: { promptTokens: 412, completionTokens: 538 },
      latencyMs: 5210,
      timeToFirstTokenMs: 380,
      cached: false,
      completedAt: '2025-01-31T12:00:06.210Z',
    },
  }),
  chatMessageUsageRecorded: defineEvent({
    type: 'vivier.chat.message.usage_recorded.v1',
    topic: TOPICS.chatEvents,
    schema: ChatMessageUsageRecordedSchema,
    description:
      'Tokens a reply used that its `message.completed` did not carry: an `async` reply cancelled while the worker ' +
      'ran it is reported `cancelled` at once, and what the provider generated before the worker stopped comes later. ' +
      'Analytics add the tokens (and their cost) to the reply\'s user, provider and model; it is not another reply.',
    key: (d) => d.chatId,
    keyDescription: CHAT_KEY,
    subject: (d) => d.messageId,
    example: {
      chatId: ID.chat,
      userId: ID.user,
      messageId: ID.assistantMessage,
      provider: 'openai',
      model: 'openai/gpt-4o-mini',
      usage: { promptTokens: 412, completionTokens: 57 },
      recordedAt: '2025-01-31T12:00:03.120Z',
    },
  }),
  chatContextTruncated: defineEvent({
    type: 'vivier.chat.context.truncated.v1',
    topic: TOPICS.chatEvents,
    schema: ChatContextTruncatedSchema,
    description:
      "A reply's context left out history that the chat's summary does not cover: the model's window is full. " +
      'The worker folds the oldest messages into the chat\'s summary (`summary.generated`).',
    key: (d) => d.chatId,
    keyDescription: CHAT_KEY,
    subject: (d) => d.messageId,
    example: {
      chatId: ID.chat,
      userId: ID.user,
      messageId: ID.userMessage,
      model: 'openai/gpt-4o-mini',
      omittedMessages: 12,
      historyBudget: 95_000,
      truncatedAt: '2025-01-31T14:00:00.000Z',
    },
  }),

  // jobs.completion / jobs.export -----------------------------------------------------------
  jobsCompletionRequested: defineEvent({
    type: 'vivier.jobs.completion.requested.v1',
    topic: TOPICS.jobsCompletion,
    schema: JobsCompletionRequestedSchema,
    description: 'Chat queued a reply for the worker to produce (a message sent with `async: true`).',
    key: (d) => d.assistantMessageId,
    keyDescription: 'assistantMessageId: the job id; jobs spread over partitions',
    subject: (d) => d.assistantMessageId,
    example: {
      chatId: ID.chat,
      userId: ID.user,
      userMessageId: ID.userMessage,
      assistantMessageId: ID.assistantMessage,
      model: 'openai/gpt-4o-mini',
      systemPrompt: 'You are a helpful travel planner.',
      messages: [{ role: 'user', content: 'Plan three days in Lisbon, please.' }],
      regenerate: false,
    },
  }),
  jobsExportRequested: defineEvent({
    type: 'vivier.jobs.export.requested.v1',
    topic: TOPICS.jobsExport,
    schema: JobsExportRequestedSchema,
    description: 'A user asked for an export of all their data.',
    key: (d) => d.exportId,
    keyDescription: 'exportId: the job id',
    subject: (d) => d.exportId,
    example: { exportId: ID.export, userId: ID.user },
  }),

  // worker.events ----------------------------------------------------------------------------
  workerCompletionFinished: defineEvent({
    type: 'vivier.worker.completion.finished.v1',
    topic: TOPICS.workerEvents,
    schema: WorkerCompletionFinishedSchema,
    description:
      'The worker ended a background reply. Chat stores it and publishes `chat.message.completed`; ' +
      'usage is counted from that event, not this one.',
    key: (d) => d.chatId,
    keyDescription: CHAT_KEY,
    subject: (d) => d.assistantMessageId,
    example: {
      assistantMessageId: ID.assistantMessage,
      chatId: ID.chat,
      userId: ID.user,
      userMessageId: ID.userMessage,
      status: 'failed',
      content: 'Day 1: Alfama and',
      provider: 'anthropic',
      model: 'anthropic/claude-sonnet-4-5',
      usage: { promptTokens: 412, completionTokens: 5 },
      latencyMs: 30_120,
      timeToFirstTokenMs: 900,
      error: { code: 'provider_unavailable', detail: 'the stream was cut after 5 tokens' },
    },
  }),
  workerTitleGenerated: defineEvent({
    type: 'vivier.worker.title.generated.v1',
    topic: TOPICS.workerEvents,
    schema: WorkerTitleGeneratedSchema,
    description: 'The worker generated a title for an untitled chat; chat applies it if still untitled.',
    key: (d) => d.chatId,
    keyDescription: CHAT_KEY,
    subject: (d) => d.chatId,
    example: { chatId: ID.chat, userId: ID.user, title: 'Three days in Lisbon' },
  }),
  workerSummaryGenerated: defineEvent({
    type: 'vivier.worker.summary.generated.v1',
    topic: TOPICS.workerEvents,
    schema: WorkerSummaryGeneratedSchema,
    description:
      "The worker summarised a chat's older messages; chat keeps the summary with the newest `throughCreatedAt` " +
      'and gives it to the model in place of the messages it covers.',
    key: (d) => d.chatId,
    keyDescription: CHAT_KEY,
    subject: (d) => d.chatId,
    example: {
      chatId: ID.chat,
      userId: ID.user,
      summary: 'The user is planning three days in Lisbon in March, prefers walking, and has booked a hotel in Baixa.',
      throughMessageId: ID.assistantMessage,
      throughCreatedAt: '2025-01-31T12:00:06.210Z',
      model: 'openai/gpt-4o-mini',
    },
  }),
  workerExportReady: defineEvent({
    type: 'vivier.worker.export.ready.v1',
    topic: TOPICS.workerEvents,
    schema: WorkerExportReadySchema,
    description: "A user's data export was written to object storage.",
    key: (d) => d.exportId,
    keyDescription: 'exportId: events of one export stay in order',
    subject: (d) => d.exportId,
    example: {
      exportId: ID.export,
      userId: ID.user,
      objectKey: `exports/${ID.user}/${ID.export}.zip`,
      sizeBytes: 48_213,
      expiresAt: '2025-02-07T12:00:00.000Z',
    },
  }),
  workerExportFailed: defineEvent({
    type: 'vivier.worker.export.failed.v1',
    topic: TOPICS.workerEvents,
    schema: WorkerExportFailedSchema,
    description: "A user's data export failed after its retries.",
    key: (d) => d.exportId,
    keyDescription: 'exportId: events of one export stay in order',
    subject: (d) => d.exportId,
    example: {
      exportId: ID.export,
      userId: ID.user,
      reason: 'The export could not be written; please try again.',
    },
  }),
};

export type EventsMap = typeof EVENTS;
export type EventName = keyof EventsMap;
export type KnownEventDefinition = EventsMap[EventName];
export type EventType = KnownEventDefinition['type'];

/** Every event definition, in declaration order. */
export const EVENT_DEFINITIONS: readonly KnownEventDefinition[] = Object.freeze(Object.values(EVENTS));

const BY_TYPE: ReadonlyMap<string, KnownEventDefinition> = (() => {
  const map = new Map<string, KnownEventDefinition>();
  for (const definition of EVENT_DEFINITIONS) {
    if (map.has(definition.type)) throw new Error(`Event type ${definition.type} is defined twice`);
    map.set(definition.type, definition);
  }
  return map;
})();

/** The definition of an event type, or undefined when this version of the contracts does not know it. */
export function getEventDefinition<T extends EventType>(type: T): EventDefinitionOf<T>;
export function getEventDefinition(type: string): KnownEventDefinition | undefined;
export function getEventDefinition(type: string): KnownEventDefinition | undefined {
  return BY_TYPE.get(type);
}

/** The event types that travel on a topic. */
export function eventsOnTopic<T extends Topic>(topic: T): EventDefinitionOnTopic<T>[] {
  return EVENT_DEFINITIONS.filter((d): d is EventDefinitionOnTopic<T> => d.topic === topic);
}

export type EventDefinitionOf<T extends EventType> = Extract<KnownEventDefinition, { type: T }>;
export type EventDefinitionOnTopic<T extends Topic> = Extract<KnownEventDefinition, { topic: T }>;

/** The envelope of one event definition, its `data` typed by the definition's schema. */
export type EventOf<D extends AnyEventDefinition> = EventEnvelope<D['type'], EventData<D>, D['source']>;

type EventsOfDefinitions<D> = D extends AnyEventDefinition ? EventOf<D> : never;

/** Any event the contracts know: a union discriminated by `type`. */
export type AnyEvent = EventsOfDefinitions<KnownEventDefinition>;
/** The event with a given type. */
export type EventByType<T extends EventType> = Extract<AnyEvent, { type: T }>;
/** The events that travel on a topic. */
export type EventOnTopic<T extends Topic> = EventsOfDefinitions<EventDefinitionOnTopic<T>>;
