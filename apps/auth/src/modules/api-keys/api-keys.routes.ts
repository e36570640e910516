import { Type } from '@sinclair/typebox';
import type { preHandlerAsyncHookHandler } from 'fastify';
import { caller, type ServiceApp } from '@vivier/service-kit';
import { PageQuery, Timestamp, Uuid, problemResponses } from '../../http.schema';
import { originOf } from '../audit/audit.service';
import type { ApiKeysService } from './api-keys.service';

const ApiKey = Type.Object({
  id: Uuid,
  name: Type.String(),
  prefix: Type.String({ description: 'the first characters of the key, to recognize it' }),
  createdAt: Timestamp,
  lastUsedAt: Type.Union([Timestamp, Type.Null()], { description: 'to the minute' }),
});

export interface ApiKeysRoutesOptions {
  apiKeys: ApiKeysService;
  /** preHandler: a caller signed in with an access token, still active. */
  signedInCaller: preHandlerAsyncHookHandler;
}

export async function apiKeysRoutes(app: ServiceApp, { apiKeys, signedInCaller }: ApiKeysRoutesOptions): Promise<void> {
  app.post(
    '/api/v1/auth/api-keys',
    {
      preHandler: signedInCaller,
      schema: {
        tags: ['auth'],
        summary: 'Create an API key (the key is shown in this response only)',
        security: [{ bearer: [] }],
        body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 100, pattern: '\\S' }) }, { additionalProperties: false }),
        response: {
          201: Type.Object({ id: Uuid, name: Type.String(), key: Type.String({ description: 'vk_…; store it now, it cannot be shown again' }), prefix: Type.String(), createdAt: Timestamp }),
          ...problemResponses(400, 401, 403),
        },
      },
    },
    async (request, reply) => {
      const created = await apiKeys.create(caller(request), request.body.name.trim(), originOf(request));
      return reply.code(201).send({ id: created.id, name: created.name, key: created.key, prefix: created.prefix, createdAt: created.createdAt });
    },
  );

  app.get(
    '/api/v1/auth/api-keys',
    {
      preHandler: signedInCaller,
      schema: {
        tags: ['auth'],
        summary: "The caller's API keys (never the keys themselves), newest first",
        security: [{ bearer: [] }],
        querystring: PageQuery,
        response: { 200: Type.Object({ items: Type.Array(ApiKey), nextCursor: Type.Union([Type.String(), Type.Null()]) }), ...problemResponses(400, 401, 403) },
      },
    },
    async (request) => apiKeys.list(caller(request), request.query),
  );

  app.delete(
    '/api/v1/auth/api-keys/:id',
    {
      preHandler: signedInCaller,
      schema: {
        tags: ['auth'],
        summary: 'Revoke an API key',
        security: [{ bearer: [] }],
        params: Type.Object({ id: Uuid }),
        response: { 204: Type.Null(), ...problemResponses(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      await apiKeys.revoke(caller(request), request.params.id, originOf(request));
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/internal/v1/api-keys/verify',
    {
      preHandler: app.requireInternalCall,
      schema: {
        hide: true,
        body: Type.Object(
          {
            key: Type.String({ minLength: 1, maxLength: 256 }),
            // The client the gateway asks for: recorded when the key is refused.
            ip: Type.Optional(Type.String({ maxLength: 64 })),
            userAgent: Type.Optional(Type.String({ maxLength: 512 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ userId: Uuid, keyId: Uuid, role: Type.Union([Type.Literal('user'), Type.Literal('admin')]) }),
          ...problemResponses(400, 401, 403),
        },
      },
    },
    async (request) =>
      apiKeys.verify(request.body.key, request.body.ip ? { ip: request.body.ip, userAgent: request.body.userAgent } : undefined),
  );
}
