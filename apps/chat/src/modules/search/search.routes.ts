import { Type } from '@sinclair/typebox';
import { caller, problems, requireIdentity, type ServiceApp } from '@vivier/service-kit';
import type { ChatDatabase } from '../../database';
import { Timestamp, Uuid, problemResponses } from '../../http.schema';
import { searchRepository } from './search.repository';

const Hit = Type.Object({
  messageId: Uuid,
  chatId: Uuid,
  chatTitle: Type.Union([Type.String(), Type.Null()]),
  role: Type.Union([Type.Literal('user'), Type.Literal('assistant')]),
  snippet: Type.String({ description: 'the matching passages, matches marked with `**`' }),
  rank: Type.Number({ description: 'ts_rank: higher is better' }),
  createdAt: Timestamp,
});

const MAX_OFFSET = 1000;

const encodeOffset = (offset: number) => Buffer.from(`o:${offset}`).toString('base64url');
function decodeOffset(cursor: string | undefined): number {
  if (cursor === undefined) return 0;
  const match = /^o:(\d{1,6})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  // Never deeper than a cursor this route hands out: a crafted one would make every page a deep scan.
  if (!match || Number(match[1]) >= MAX_OFFSET) throw problems.validation('The cursor is invalid.', [{ path: 'querystring/cursor', message: 'is invalid' }]);
  return Number(match[1]);
}

export async function searchRoutes(app: ServiceApp, { db }: { db: ChatDatabase }): Promise<void> {
  const repository = searchRepository(db);
  app.get(
    '/api/v1/chats/search',
    {
      preHandler: requireIdentity,
      schema: {
        tags: ['chats'],
        security: [{ bearer: [] }],
        summary: "Full-text search over the caller's messages, best match first",
        description: 'PostgreSQL full-text search (English stemming; web-search syntax: "exact phrase", or, -exclude). Pages by `cursor`, up to 1,000 results deep.',
        querystring: Type.Object(
          {
            q: Type.String({ minLength: 1, maxLength: 500 }),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
            cursor: Type.Optional(Type.String({ maxLength: 100 })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ items: Type.Array(Hit), nextCursor: Type.Union([Type.String(), Type.Null()]) }), ...problemResponses(400, 401) },
      },
    },
    async (request) => {
      const limit = request.query.limit ?? 20;
      const offset = decodeOffset(request.query.cursor);
      const rows = await repository.search(caller(request).sub, request.query.q, limit + 1, offset);
      const items = rows.slice(0, limit).map((r) => ({ ...r, createdAt: r.createdAt.toISOString() }));
      const next = offset + limit;
      return { items, nextCursor: rows.length > limit && next < MAX_OFFSET ? encodeOffset(next) : null };
    },
  );
}
