import { Type } from '@sinclair/typebox';
import type { preHandlerAsyncHookHandler } from 'fastify';
import { caller, type ServiceApp } from '@vivier/service-kit';
import { PageQuery, TokenPair, Timestamp, Uuid, problemResponses } from '../../http.schema';
import { originOf } from '../audit/audit.service';
import type { SessionsService } from './sessions.service';

const RefreshBody = Type.Object({ refreshToken: Type.String({ minLength: 1, maxLength: 512 }) }, { additionalProperties: false });

const Session = Type.Object({
  id: Uuid,
  createdAt: Timestamp,
  lastUsedAt: Timestamp,
  userAgent: Type.Union([Type.String(), Type.Null()]),
  ip: Type.Union([Type.String(), Type.Null()]),
  current: Type.Boolean({ description: 'the session of the access token making this call' }),
});

export interface SessionsRoutesOptions {
  sessions: SessionsService;
  /** preHandler: a caller signed in with an access token (not an API key), still active. */
  signedInCaller: preHandlerAsyncHookHandler;
}

export async function sessionsRoutes(app: ServiceApp, { sessions, signedInCaller }: SessionsRoutesOptions): Promise<void> {
  app.post(
    '/api/v1/auth/refresh',
    {
      schema: {
        tags: ['auth'],
        summary: 'Exchange a refresh token for a new token pair',
        description:
          'The refresh token is rotated: the response carries its successor. A rotated token presented again within a few seconds gets the same successor; later, it is `token_reused` and every token of that sign-in is revoked.',
        body: RefreshBody,
        response: { 200: TokenPair, ...problemResponses(400, 401, 403) },
      },
    },
    async (request) => sessions.refresh(request.body.refreshToken, originOf(request)),
  );

  app.post(
    '/api/v1/auth/logout',
    {
      schema: {
        tags: ['auth'],
        summary: 'End the session of a refresh token',
        body: RefreshBody,
        response: { 204: Type.Null(), ...problemResponses(400) },
      },
    },
    async (request, reply) => {
      await sessions.logout(request.body.refreshToken, originOf(request));
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/api/v1/auth/logout-all',
    {
      preHandler: signedInCaller,
      schema: {
        tags: ['auth'],
        summary: 'End every session of the caller',
        security: [{ bearer: [] }],
        response: { 204: Type.Null(), ...problemResponses(401, 403) },
      },
    },
    async (request, reply) => {
      await sessions.logoutAll(caller(request), originOf(request));
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/api/v1/auth/sessions',
    {
      preHandler: signedInCaller,
      schema: {
        tags: ['auth'],
        summary: "The caller's active sessions, newest first",
        security: [{ bearer: [] }],
        querystring: PageQuery,
        response: { 200: Type.Object({ items: Type.Array(Session), nextCursor: Type.Union([Type.String(), Type.Null()]) }), ...problemResponses(400, 401, 403) },
      },
    },
    async (request) => sessions.list(caller(request), request.query),
  );

  app.delete(
    '/api/v1/auth/sessions/:id',
    {
      preHandler: signedInCaller,
      schema: {
        tags: ['auth'],
        summary: 'Revoke one of the caller’s sessions',
        security: [{ bearer: [] }],
        params: Type.Object({ id: Uuid }),
        response: { 204: Type.Null(), ...problemResponses(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      await sessions.revokeOne(caller(request), request.params.id, originOf(request));
      return reply.code(204).send(null);
    },
  );
}
