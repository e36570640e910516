import { Type } from '@sinclair/typebox';
import { caller, requireIdentity, type ServiceApp } from '@vivier/service-kit';
import { Chat, IdParams, ModelIdField, PageQuery, SystemPromptField, TitleField, pageSchema, problemResponses } from '../../http.schema';
import { chatView, type ChatsService } from './chats.service';

const tags = ['chats'];
const security = [{ bearer: [] }];

export async function chatsRoutes(app: ServiceApp, { chats }: { chats: ChatsService }): Promise<void> {
  app.addHook('preHandler', requireIdentity);

  app.post(
    '/api/v1/chats',
    {
      schema: {
        tags,
        security,
        summary: 'Create a chat',
        body: Type.Object(
          { title: Type.Optional(TitleField), model: Type.Optional(ModelIdField), systemPrompt: Type.Optional(SystemPromptField) },
          { additionalProperties: false },
        ),
        response: { 201: Chat, ...problemResponses(400, 401) },
      },
    },
    async (request, reply) => reply.code(201).send(await chats.create(caller(request), request.body)),
  );

  app.get(
    '/api/v1/chats',
    {
      schema: {
        tags,
        security,
        summary: "The caller's chats, newest first",
        description: 'Without `archived`, the chats that are not archived; `archived=true` lists the archived ones.',
        querystring: Type.Composite([PageQuery, Type.Object({ archived: Type.Optional(Type.Boolean()) })], { additionalProperties: false }),
        response: { 200: pageSchema(Chat), ...problemResponses(400, 401) },
      },
    },
    async (request) => chats.list(caller(request), request.query),
  );

  app.get(
    '/api/v1/chats/:id',
    {
      schema: { tags, security, summary: 'Read a chat', params: IdParams, response: { 200: Chat, ...problemResponses(401, 404) } },
    },
    async (request) => chatView(await chats.require(caller(request), request.params.id)),
  );

  app.patch(
    '/api/v1/chats/:id',
    {
      schema: {
        tags,
        security,
        summary: 'Rename, archive, or change the model or system prompt of a chat',
        params: IdParams,
        body: Type.Object(
          {
            title: Type.Optional(TitleField),
            archived: Type.Optional(Type.Boolean()),
            model: Type.Optional(ModelIdField),
            // Null first: with type coercion on, a null would otherwise become "".
            systemPrompt: Type.Optional(Type.Union([Type.Null(), SystemPromptField])),
          },
          { additionalProperties: false },
        ),
        response: { 200: Chat, ...problemResponses(400, 401, 404) },
      },
    },
    async (request) => chats.update(caller(request), request.params.id, request.body),
  );

  app.delete(
    '/api/v1/chats/:id',
    {
      schema: {
        tags,
        security,
        summary: 'Delete a chat and its messages',
        params: IdParams,
        response: { 204: Type.Null(), ...problemResponses(401, 404) },
      },
    },
    async (request, reply) => {
      await chats.delete(caller(request), request.params.id);
      return reply.code(204).send(null);
    },
  );
}
