import { Readable } from 'node:stream';
import { Type } from '@sinclair/typebox';
import { caller, requireIdentity, type ServiceApp } from '@vivier/service-kit';
import { IdParams, Timestamp, Uuid, problemResponses } from '../../http.schema';
import type { ExportsService } from './exports.service';

const tags = ['exports'];
const security = [{ bearer: [] }];

const Export = Type.Object({
  id: Uuid,
  status: Type.Union([Type.Literal('pending'), Type.Literal('ready'), Type.Literal('failed')]),
  createdAt: Timestamp,
  url: Type.Optional(Type.String({ format: 'uri', description: 'ready: presigned download URL (NDJSON bundle), valid until urlExpiresAt' })),
  urlExpiresAt: Type.Optional(Timestamp),
  expiresAt: Type.Optional({ ...Timestamp, description: 'ready: when the bundle is deleted' }),
  sizeBytes: Type.Optional(Type.Integer({ minimum: 0 })),
  error: Type.Optional(Type.String({ description: 'failed: why' })),
});

/** `POST/GET /api/v1/exports[/:id]`: a user's export of all their data. */
export async function exportsRoutes(app: ServiceApp, { exports }: { exports: ExportsService }): Promise<void> {
  app.addHook('preHandler', requireIdentity);

  app.post(
    '/api/v1/exports',
    {
      schema: {
        tags,
        security,
        summary: 'Request an export of all your data',
        description:
          'Answers 202 at once; the bundle (NDJSON: your chats, their messages, your files) is built in the background. Poll `GET /api/v1/exports/:id` until `status` is `ready` (with a download `url`) or `failed`. While an export is pending, asking again returns that one.',
        response: { 202: Export, ...problemResponses(401) },
      },
    },
    async (request, reply) => reply.code(202).send(await exports.request(caller(request))),
  );

  app.get(
    '/api/v1/exports',
    {
      schema: {
        tags,
        security,
        summary: 'Your exports, newest first',
        querystring: Type.Object(
          { limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 50, default: 20 })), cursor: Type.Optional(Type.String({ maxLength: 200 })) },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ items: Type.Array(Export), nextCursor: Type.Union([Type.String(), Type.Null()]) }), ...problemResponses(400, 401) },
      },
    },
    async (request) => exports.list(caller(request), request.query.limit ?? 20, request.query.cursor),
  );

  app.get(
    '/api/v1/exports/:id',
    {
      schema: { tags, security, summary: 'An export and, once ready, its download URL', params: IdParams, response: { 200: Export, ...problemResponses(400, 401, 404) } },
    },
    async (request) => exports.get(caller(request), request.params.id),
  );
}

/** The worker's source of a user's data (internal network, signed internal calls only). */
export async function exportsInternalRoutes(app: ServiceApp, { exports }: { exports: ExportsService }): Promise<void> {
  app.get(
    '/internal/v1/users/:userId/export',
    {
      preHandler: app.requireInternalCall,
      schema: { hide: true, params: Type.Object({ userId: Uuid }), response: problemResponses(400, 401, 403) },
    },
    async (request, reply) =>
      reply.type('application/x-ndjson; charset=utf-8').header('cache-control', 'no-store').send(Readable.from(exports.userData(request.params.userId))),
  );
}
