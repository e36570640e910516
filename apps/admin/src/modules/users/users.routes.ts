import { Type } from '@sinclair/typebox';
import type { ServiceApp } from '@vivier/service-kit';
import { adminActorOf } from '../../admin-actor';
import { Nullable, PageQuery, Timestamp, Uuid, adminSecurity, problemResponses } from '../../http.schema';
import type { UsersService } from './users.service';

const Role = Type.Union([Type.Literal('user'), Type.Literal('admin')]);
const Status = Type.Union([Type.Literal('active'), Type.Literal('disabled')]);

const User = Type.Object({
  id: Uuid,
  email: Type.String(),
  name: Nullable(Type.String()),
  role: Role,
  status: Status,
  disabled: Type.Boolean(),
  mfaEnabled: Type.Boolean(),
  createdAt: Timestamp,
  lastLoginAt: Nullable(Timestamp),
  lastActiveAt: Nullable(Timestamp),
  chats: Type.Integer({ description: 'chats the user has now' }),
  messages: Type.Integer({ description: 'messages sent and replies received, all time' }),
  tokens: Type.Integer({ description: 'tokensIn + tokensOut, all time' }),
  tokensIn: Type.Integer(),
  tokensOut: Type.Integer(),
  monthlyTokens: Nullable(Type.Integer({ description: 'monthly token quota; null: unlimited' })),
});

export async function usersRoutes(app: ServiceApp, { users }: { users: UsersService }): Promise<void> {
  app.get(
    '/api/v1/admin/users',
    {
      schema: {
        tags: ['admin'],
        summary: 'Users with their activity, newest first',
        description: '`q` matches the start of the email, of its domain or of the name, case-insensitively.',
        security: adminSecurity,
        querystring: Type.Object({
          q: Type.Optional(Type.String({ minLength: 1, maxLength: 254 })),
          role: Type.Optional(Role),
          status: Type.Optional(Status),
          ...PageQuery,
        }),
        response: { 200: Type.Object({ items: Type.Array(User), nextCursor: Nullable(Type.String()) }), ...problemResponses(400, 401, 403) },
      },
    },
    async (request) => users.list(request.query),
  );

  app.get(
    '/api/v1/admin/users/:id',
    {
      schema: {
        tags: ['admin'],
        summary: 'One user with their activity',
        security: adminSecurity,
        params: Type.Object({ id: Uuid }),
        response: { 200: User, ...problemResponses(400, 401, 403, 404) },
      },
    },
    async (request) => users.get(request.params.id),
  );

  app.patch(
    '/api/v1/admin/users/:id',
    {
      schema: {
        tags: ['admin'],
        summary: "Change a user's role, disable or enable them",
        description:
          'Publishes `user.role_changed`, `user.disabled` or `user.enabled` on admin.events; disabling revokes every session of the user at once (auth). The last active administrator cannot be demoted or disabled (409 `last_admin`).',
        security: adminSecurity,
        params: Type.Object({ id: Uuid }),
        body: Type.Object(
          {
            role: Type.Optional(Role),
            disabled: Type.Optional(Type.Boolean()),
            reason: Type.Optional(Type.String({ maxLength: 500, description: 'note kept with a disable' })),
          },
          { additionalProperties: false, minProperties: 1 },
        ),
        response: { 200: User, ...problemResponses(400, 401, 403, 404, 409) },
      },
    },
    async (request) => users.update(adminActorOf(request), request.params.id, request.body),
  );
}
