import { Type, type Static } from '@sinclair/typebox';
import { AdminActor, ModelId, Nullable, ProviderId, Role, StringEnum, Uuid } from './common.schema.js';

// Payloads of `admin.events`, produced by admin. The actor is always the administrator.

export const AdminUserRoleChangedSchema = Type.Object(
  {
    actor: AdminActor,
    userId: Uuid('the user whose role changed'),
    role: Role,
    previousRole: Role,
  },
  { additionalProperties: false },
);
export type AdminUserRoleChangedData = Static<typeof AdminUserRoleChangedSchema>;

export const AdminUserDisabledSchema = Type.Object(
  {
    actor: AdminActor,
    userId: Uuid('the disabled user: auth revokes every session, chat refuses new messages'),
    reason: Type.Optional(Type.String({ maxLength: 500, description: "the administrator's note" })),
  },
  { additionalProperties: false },
);
export type AdminUserDisabledData = Static<typeof AdminUserDisabledSchema>;

export const AdminUserEnabledSchema = Type.Object(
  {
    actor: AdminActor,
    userId: Uuid(),
  },
  { additionalProperties: false },
);
export type AdminUserEnabledData = Static<typeof AdminUserEnabledSchema>;

export const AdminQuotaSetSchema = Type.Object(
  {
    actor: AdminActor,
    userId: Uuid(),
    monthlyTokens: Nullable(Type.Integer({ minimum: 0 }), {
      description: 'tokens per calendar month (UTC); null for unlimited',
    }),
  },
  { additionalProperties: false },
);
export type AdminQuotaSetData = Static<typeof AdminQuotaSetSchema>;

export const PROVIDER_KINDS = ['openai', 'anthropic', 'gemini', 'ollama', 'openai_compatible'] as const;

const Base64 = (options: {
  minLength?: number;
  maxLength?: number;
  description?: string;
  pattern?: string;
}) =>
  Type.String({ pattern: '^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$', ...options });

/**
 * A secret encrypted with AES-256-GCM under a key from configuration, with the provider id as
 * additional authenticated data (so a ciphertext cannot be moved to another provider). Consumers
 * that hold the same configured key (chat) decrypt it in memory; the clear key is never in an event.
 */
export const EncryptedSecret = Type.Object(
  {
    algorithm: Type.Literal('aes-256-gcm'),
    keyId: Type.String({
      minLength: 1,
      maxLength: 64,
      pattern: '^[A-Za-z0-9._-]+$',
      description: 'id of the configured encryption key, so keys can rotate',
    }),
    iv: Base64({ pattern: '^[A-Za-z0-9+/]{16}$', description: '12-byte nonce, base64' }),
    ciphertext: Base64({ minLength: 4, maxLength: 8192, description: 'base64' }),
    tag: Base64({ pattern: '^[A-Za-z0-9+/]{22}==$', description: '16-byte GCM tag, base64' }),
  },
  { additionalProperties: false },
);
export type EncryptedSecret = Static<typeof EncryptedSecret>;

/** The full configuration of one provider after the change (last event wins). */
export const AdminProviderConfiguredSchema = Type.Object(
  {
    actor: AdminActor,
    providerId: ProviderId(),
    kind: StringEnum(PROVIDER_KINDS, { description: 'wire protocol of the provider' }),
    enabled: Type.Boolean(),
    baseUrl: Nullable(Type.String({ minLength: 1, maxLength: 2048, pattern: '^https?://' }), {
      description: "null for the vendor's default endpoint; checked against SSRF by admin",
    }),
    models: Type.Array(ModelId('a model name of this provider'), {
      maxItems: 500,
      uniqueItems: true,
      description: 'models offered explicitly (empty: the ones the provider lists)',
    }),
    routing: Type.Object(
      {
        weight: Type.Integer({
          minimum: 0,
          maximum: 1000,
          description: 'load-balancing weight; 0 = fallback only',
        }),
        timeoutMs: Type.Integer({ minimum: 1, maximum: 600_000 }),
        maxRetries: Type.Integer({ minimum: 0, maximum: 10 }),
        fallbacks: Type.Array(ProviderId(), { maxItems: 20, description: 'providers to try next, in order' }),
      },
      { additionalProperties: false },
    ),
    apiKeyEnvelope: Nullable(EncryptedSecret, {
      description: 'the encrypted API key; null when none is set',
    }),
    revision: Type.Integer({
      minimum: 1,
      description: 'grows with every change of this provider, so a consumer can ignore a stale one',
    }),
  },
  { additionalProperties: false },
);
export type AdminProviderConfiguredData = Static<typeof AdminProviderConfiguredSchema>;
