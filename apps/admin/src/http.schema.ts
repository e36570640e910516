import { Type, type NumberOptions, type StringOptions, type TNull, type TSchema, type TUnion } from '@sinclair/typebox';
import { Problem, problemResponses, Timestamp, Uuid } from '@vivier/service-kit';

// Schemas shared by the admin routes: they validate requests, shape responses and become the
// OpenAPI document the gateway serves.

export { Problem, problemResponses, Timestamp, Uuid };

/** A response field that may be null. */
export const Nullable = <T extends TSchema>(schema: T) => Type.Union([Type.Null(), schema]);

/**
 * Request fields that may be null. The validator coerces types, and with `anyOf` it would turn a
 * null into 0 or "" (or "" into null) while trying the branches; `type: [<type>, 'null']` checks
 * the value as it is. The static type stays the union's.
 */
function nullableInput<T extends TSchema>(union: TUnion<[TNull, T]>, type: string, options: object): TUnion<[TNull, T]> {
  const schema: Record<string, unknown> = { ...union, ...options, type: [type, 'null'] };
  delete schema.anyOf;
  return schema as unknown as TUnion<[TNull, T]>;
}
export const NullableStringInput = (options: StringOptions = {}) => nullableInput(Type.Union([Type.Null(), Type.String()]), 'string', options);
export const NullableIntegerInput = (options: NumberOptions = {}) => nullableInput(Type.Union([Type.Null(), Type.Integer()]), 'integer', options);

export const PageQuery = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 50 })),
  cursor: Type.Optional(Type.String({ maxLength: 300, description: 'nextCursor of the previous page' })),
};

/** A day (`2025-01-31`) or a timestamp (`2025-01-31T12:00:00Z`). */
// Year 0000 parses in JavaScript, but PostgreSQL has no year 0 (it was a 500).
export const DayOrTime = Type.String({ maxLength: 40, pattern: '^(?!0000)\\d{4}-\\d{2}-\\d{2}(T.*)?$', description: 'YYYY-MM-DD or an ISO 8601 timestamp (year 0001 on)' });

export const ProviderName = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$', description: 'provider id' });

/** Every admin route is for administrators only. */
export const adminSecurity = [{ bearer: [] }];
