import { Readable } from 'node:stream';
import { Type } from '@sinclair/typebox';
import type { ServiceApp } from '@vivier/service-kit';
import { DayOrTime, Nullable, PageQuery, Timestamp, Uuid, adminSecurity, problemResponses } from '../../http.schema';
import type { AuditService } from './audit.service';

const AuditEvent = Type.Object({
  id: Uuid,
  type: Type.String({ description: 'the event type, e.g. vivier.auth.login.failed.v1' }),
  occurredAt: Timestamp,
  actorUserId: Nullable(Uuid),
  userId: Nullable(Uuid),
  ip: Nullable(Type.String()),
  userAgent: Nullable(Type.String()),
  details: Type.Record(Type.String(), Type.Unknown(), { description: 'the event payload without its actor and without secrets' }),
});

const NDJSON = 'application/x-ndjson';

export async function auditRoutes(app: ServiceApp, { audit }: { audit: AuditService }): Promise<void> {
  app.get(
    '/api/v1/admin/audit',
    {
      schema: {
        tags: ['admin'],
        summary: 'The audit log: every auth and admin event, newest first',
        description:
          '`userId`: events about that user; `actorId`: events by that user; `type`: a full type or a dotted prefix (`auth`, `auth.login.failed`); `from` inclusive, `to` exclusive (a day alone: to its end). With `Accept: application/x-ndjson` or `format=ndjson` the whole filtered log is streamed, one JSON object per line, in the same order.',
        security: adminSecurity,
        querystring: Type.Object({
          userId: Type.Optional(Uuid),
          actorId: Type.Optional(Uuid),
          type: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '^[a-z0-9._]+$' })),
          from: Type.Optional(DayOrTime),
          to: Type.Optional(DayOrTime),
          format: Type.Optional(Type.Union([Type.Literal('json'), Type.Literal('ndjson')])),
          ...PageQuery,
        }),
        response: {
          200: {
            description: 'a page (JSON) or the whole log (NDJSON)',
            content: {
              'application/json': { schema: Type.Object({ items: Type.Array(AuditEvent), nextCursor: Nullable(Type.String()) }) },
              [NDJSON]: { schema: AuditEvent },
            },
          },
          ...problemResponses(400, 401, 403),
        },
      },
    },
    async (request, reply) => {
      const accept = request.headers.accept ?? '';
      const ndjson = request.query.format === 'ndjson' || (request.query.format === undefined && accept.includes(NDJSON));
      if (!ndjson) return audit.page(request.query);
      // Validate the filters and the cursor before the status line goes out.
      audit.filterOf(request.query);
      const lines = audit.exportLines(request.query);
      const first = await lines.next();
      reply.type(`${NDJSON}; charset=utf-8`).header('content-disposition', 'attachment; filename="audit.ndjson"');
      const stream = Readable.from(
        (async function* () {
          if (!first.done) yield first.value;
          yield* lines;
        })(),
      );
      // A stream is sent as it is (no serializer); the route's types only know the JSON page.
      return reply.send(stream as unknown as Awaited<ReturnType<AuditService['page']>>);
    },
  );
}
