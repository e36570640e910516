import { Type, type Static } from '@sinclair/typebox';
import { Problem, problemResponses, problems, Timestamp, Uuid } from '@vivier/service-kit';

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

/** A position in a newest-first list: the last item's creation time and id. */
export interface Cursor {
  createdAt: Date;
  id: string;
}

export function encodeCursor(item: { createdAt: Date; id: string }): string {
  return Buffer.from(JSON.stringify([item.createdAt.toISOString(), item.id])).toString('base64url');
}

export function decodeCursor(cursor: string | undefined): Cursor | undefined {
  if (cursor === undefined) return undefined;
  try {
    const [createdAt, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as [string, string];
    const date = new Date(createdAt);
    if (Number.isNaN(date.getTime()) || typeof id !== 'string' || !/^[0-9a-f-]{36}$/i.test(id)) throw new Error('bad cursor');
    return { createdAt: date, id };
  } catch {
    throw problems.validation('The cursor is invalid.', [{ path: 'querystring/cursor', message: 'is invalid' }]);
  }
}

/** `{items, nextCursor}` from rows fetched with limit + 1. */
export function pageOf<R extends { createdAt: Date; id: string }, T>(rows: R[], limit: number, view: (row: R) => T): { items: T[]; nextCursor: string | null } {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return { items: items.map(view), nextCursor: rows.length > limit && last ? encodeCursor(last) : null };
}
