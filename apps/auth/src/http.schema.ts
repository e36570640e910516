import { Type, type Static } from '@sinclair/typebox';
import { decodeTimeCursor, encodeTimeCursor, Problem, problemResponses, Timestamp, Uuid } from '@vivier/service-kit';
import { sql, type AnyColumn, type SQL } from 'drizzle-orm';

// Schemas shared by the auth routes: they validate requests, shape responses and become the
// OpenAPI document the gateway serves.

export { Problem, problemResponses, Timestamp, Uuid };

export const Email = Type.String({ minLength: 3, maxLength: 254, pattern: '^[^\\s@]+@[^\\s@]+\\.[^\\s@]+$', description: 'email address' });

export const User = Type.Object({
  id: Uuid,
  email: Type.String(),
  name: Type.Union([Type.String(), Type.Null()]),
  role: Type.Union([Type.Literal('user'), Type.Literal('admin')]),
  mfaEnabled: Type.Boolean(),
  createdAt: Timestamp,
});
export type UserView = Static<typeof User>;

export const TokenPair = Type.Object({
  accessToken: Type.String({ description: 'JWT (EdDSA), valid for expiresIn seconds' }),
  refreshToken: Type.String({ description: 'opaque (vrt_…), single use: every refresh returns a new one' }),
  expiresIn: Type.Integer({ description: 'seconds until the access token expires' }),
});
export type TokenPairView = Static<typeof TokenPair>;

export const SignedIn = Type.Composite([Type.Object({ user: User }), TokenPair]);
export type SignedInView = Static<typeof SignedIn>;

export const PageQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 50 })),
  cursor: Type.Optional(Type.String({ maxLength: 200 })),
});

/**
 * A column of creation times as a page walks it: in milliseconds, as a cursor (a JavaScript Date)
 * carries it. PostgreSQL's `now()` has microseconds: comparing those with a cursor cut to the
 * millisecond left out rows created in the same millisecond as a page's last one, after it.
 */
export function createdAtMs(column: AnyColumn): SQL<Date> {
  return sql<Date>`date_trunc('milliseconds', ${column})`;
}

/** A position in a newest-first list: the last item's creation time and id. */
export interface Cursor {
  createdAt: Date;
  id: string;
}

export function encodeCursor(item: { createdAt: Date; id: string }): string {
  return encodeTimeCursor(item.createdAt, item.id);
}

export function decodeCursor(cursor: string | undefined): Cursor | undefined {
  const position = decodeTimeCursor(cursor);
  return position && { createdAt: position.at, id: position.id };
}

/** `{items, nextCursor}` from rows fetched with limit + 1. */
export function pageOf<R extends { createdAt: Date; id: string }, T>(rows: R[], limit: number, view: (row: R) => T): { items: T[]; nextCursor: string | null } {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return { items: items.map(view), nextCursor: rows.length > limit && last ? encodeCursor(last) : null };
}
