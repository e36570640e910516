import {
  Type,
  type Static,
  type StringOptions,
  type TLiteral,
  type TNull,
  type TSchema,
  type TUnion,
  type SchemaOptions,
} from '@sinclair/typebox';
import '../formats.js';

// Building blocks shared by the payload schemas. Ids are UUIDs and times are UTC, as in the public API.

/** A UUID (checked by the `uuid` format). */
export const Uuid = (description?: string) =>
  Type.String({ format: 'uuid', ...(description ? { description } : {}) });

/** UTC timestamps only: RFC 3339 with a `Z` offset, as `Date.prototype.toISOString()` writes them. */
export const UTC_TIMESTAMP_PATTERN = '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?Z$';

export const Timestamp = (description?: string) =>
  Type.String({
    format: 'date-time',
    pattern: UTC_TIMESTAMP_PATTERN,
    ...(description ? { description } : {}),
  });

/** A closed set of strings. Adding a value breaks strict consumers: that is a new event version. */
export function StringEnum<const T extends readonly [string, ...string[]]>(
  values: T,
  options: SchemaOptions = {},
): TUnion<TLiteral<T[number]>[]> {
  return Type.Union(
    values.map((value) => Type.Literal(value)),
    options,
  );
}

export function Nullable<T extends TSchema>(schema: T, options: SchemaOptions = {}): TUnion<[T, TNull]> {
  return Type.Union([schema, Type.Null()], options);
}

export const Email = (options: StringOptions = {}) =>
  Type.String({ minLength: 3, maxLength: 254, pattern: '^[^\\s@]+@[^\\s@]+$', ...options });

/** Who did something and from where. Empty for the platform itself; never a secret or a token. */
export const Actor = Type.Object(
  {
    userId: Type.Optional(Uuid('the signed-in user who acted; absent for anonymous attempts and the system')),
    ip: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'client IP address' })),
    userAgent: Type.Optional(Type.String({ maxLength: 512, description: 'client User-Agent, truncated' })),
  },
  { additionalProperties: false, description: 'who acted, from where' },
);
export type Actor = Static<typeof Actor>;

/** The administrator behind an admin action. */
export const AdminActor = Type.Object(
  {
    userId: Uuid('the administrator who acted'),
    ip: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'client IP address' })),
    userAgent: Type.Optional(Type.String({ maxLength: 512, description: 'client User-Agent, truncated' })),
  },
  { additionalProperties: false, description: 'the administrator who acted, from where' },
);
export type AdminActor = Static<typeof AdminActor>;

export const ROLES = ['user', 'admin'] as const;
export const Role = StringEnum(ROLES, { description: 'user role' });
export type Role = Static<typeof Role>;

/** A provider id: `openai`, `anthropic`, `gemini`, `ollama`, `sim` or a name from the providers file. */
export const ProviderId = (description = 'provider id') =>
  Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$', description });

/** The longest model id an event carries. */
export const MODEL_ID_MAX_LENGTH = 256;

/** A model id (`<provider>/<model>`) or an alias from the providers file. */
export const ModelId = (description = 'model id, `<provider>/<model>`') =>
  Type.String({ minLength: 1, maxLength: MODEL_ID_MAX_LENGTH, description });

/**
 * A resolved `<provider>/<model>` as an event may carry it: a provider's own model name may be as
 * long as the whole id, so the pair is cut to MODEL_ID_MAX_LENGTH.
 */
export function eventModelId(id: string): string {
  return cutText(id, MODEL_ID_MAX_LENGTH);
}

/**
 * At most `maxLength` UTF-16 units of `text`, never half a character: a lone surrogate is not
 * valid JSON text for PostgreSQL (a jsonb or an outbox row holding one is refused).
 */
export function cutText(text: string, maxLength: number): string {
  if (text.length <= maxLength) return text;
  const last = text.charCodeAt(maxLength - 1);
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? maxLength - 1 : maxLength);
}

export const Usage = Type.Object(
  {
    promptTokens: Type.Integer({ minimum: 0 }),
    completionTokens: Type.Integer({ minimum: 0 }),
  },
  { additionalProperties: false, description: 'tokens counted by the provider (or estimated)' },
);
export type Usage = Static<typeof Usage>;

export const MESSAGE_STATUSES = ['completed', 'cancelled', 'failed'] as const;
export const MessageStatus = StringEnum(MESSAGE_STATUSES, { description: 'final status of a reply' });
export type MessageStatus = Static<typeof MessageStatus>;

/** A failure as the API reports it: a stable code and a human detail (never a secret). */
export const ErrorInfo = Type.Object(
  {
    code: Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z][a-z0-9_]*$' }),
    detail: Type.String({ maxLength: 2000 }),
  },
  { additionalProperties: false },
);
export type ErrorInfo = Static<typeof ErrorInfo>;
