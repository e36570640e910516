import { Type, type TSchema } from '@sinclair/typebox';
import { problems } from './errors';

// Route schemas every service shares: they validate requests, shape responses and become the
// OpenAPI document the gateway serves.

/** RFC 9457 problem details, as every error of every service is answered. */
export const Problem = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    code: Type.String({ description: 'stable machine-readable code' }),
    detail: Type.Optional(Type.String()),
    requestId: Type.Optional(Type.String()),
    errors: Type.Optional(Type.Array(Type.Object({ path: Type.String(), message: Type.String() }))),
  },
  { additionalProperties: true, description: 'RFC 9457 problem details' },
);

/** Problem responses of a route, by status. */
export function problemResponses(...statuses: number[]): Record<number, TSchema> {
  return Object.fromEntries(statuses.map((s) => [s, Problem]));
}

export const Uuid = Type.String({ format: 'uuid' });
export const Timestamp = Type.String({ format: 'date-time', description: 'ISO 8601, UTC' });

const CURSOR_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Times a cursor may name: what PostgreSQL and ISO 8601 both take without surprise. */
const CURSOR_EARLIEST = Date.UTC(1970, 0, 1);
const CURSOR_LATEST = Date.UTC(10000, 0, 1);

/** An opaque cursor naming the last item of a page ordered by (time, id). */
export function encodeTimeCursor(at: Date, id: string): string {
  return Buffer.from(JSON.stringify([at.toISOString(), id])).toString('base64url');
}

/**
 * The (time, id) an encodeTimeCursor cursor names; anything else is a 400 `validation_failed`, never
 * a database error: the id must be a UUID and the time between 1970 and 9999.
 */
export function decodeTimeCursor(cursor: string | undefined): { at: Date; id: string } | undefined {
  if (cursor === undefined) return undefined;
  try {
    const parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (!Array.isArray(parsed) || parsed.length !== 2 || typeof parsed[0] !== 'string' || typeof parsed[1] !== 'string') throw new Error('bad cursor');
    const at = new Date(parsed[0]);
    const ms = at.getTime();
    if (Number.isNaN(ms) || ms < CURSOR_EARLIEST || ms >= CURSOR_LATEST || !CURSOR_UUID.test(parsed[1])) throw new Error('bad cursor');
    return { at, id: parsed[1].toLowerCase() };
  } catch {
    throw problems.validation('The cursor is invalid.', [{ path: 'querystring/cursor', message: 'is invalid' }]);
  }
}
