import { Type } from '@sinclair/typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { caller, HttpProblem, requireIdentity, type ServiceApp } from '@vivier/service-kit';
import { IdParams, Message, MessageParams, ModelIdField, PageQuery, Uuid, pageSchema, problemResponses } from '../../http.schema';
import { isTerminal } from '../replies/reply-events';
import type { ReplyReplay } from '../replies/reply-replay.service';
import { lastEventIdOf, SseStream, wantsEventStream } from '../replies/sse';
import { messageView } from './messages.repository';
import type { MessagesService, StartedReply } from './messages.service';

const tags = ['messages'];
const security = [{ bearer: [] }];

const replyOptions = {
  model: Type.Optional(ModelIdField),
  temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 2, description: '0 makes the request cacheable' })),
  maxTokens: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'cap on the reply (default CHAT_MAX_OUTPUT_TOKENS)' })),
  async: Type.Optional(Type.Boolean({ description: 'queue the reply for the worker: 202 with the reply `queued`' })),
};

const SendBody = Type.Object(
  {
    content: Type.String({ minLength: 1, maxLength: 200_000 }),
    attachments: Type.Optional(Type.Array(Uuid, { maxItems: 10, uniqueItems: true, description: 'ids from POST /api/v1/files' })),
    ...replyOptions,
  },
  { additionalProperties: false },
);

const Turn = Type.Object({ userMessage: Message, assistantMessage: Message });

const SSE_DESCRIPTION =
  'With `Accept: text/event-stream`: an SSE stream. Each event has an `id` (its sequence number within the reply): ' +
  '`message` `{userMessage, assistantMessageId}`, `delta` `{text}` (many), `usage` `{promptTokens, completionTokens}`, ' +
  'then `done` `{message}` or `error` `{code, detail, message}`. The reply goes on if the client disconnects; ' +
  'GET …/messages/{messageId}/stream with `Last-Event-ID` resumes it.';

const EventStream = { description: SSE_DESCRIPTION, content: { 'text/event-stream': { schema: Type.String() } } };

export interface MessagesRoutesOptions {
  messages: MessagesService;
  replay: ReplyReplay;
  heartbeatMs: number;
}

/** The status a JSON send answers for a reply that failed, by its error code (else 502 for provider_*, 500). */
const FAILED_REPLY_STATUS: Record<string, number> = {
  chat_deleted: 404,
  stream_interrupted: 502,
  // The instance stopped while the reply ran (a deploy): worth sending again, to another instance.
  service_shutdown: 503,
};

export async function messagesRoutes(app: ServiceApp, { messages, replay, heartbeatMs }: MessagesRoutesOptions): Promise<void> {
  app.addHook('preHandler', requireIdentity);

  /** Answers a started reply as the client asked: SSE, 202 (queued) or 201 once it has ended. */
  async function respond(request: FastifyRequest, reply: FastifyReply, started: StartedReply) {
    const userMessage = messageView(started.userMessage);
    if (!started.run) return reply.code(202).send({ userMessage, assistantMessage: messageView(started.assistant) });
    const run = started.run;
    if (wantsEventStream(request)) {
      const sse = new SseStream(request, reply, heartbeatMs);
      const unsubscribe = run.subscribe((event) => {
        sse.send(event);
        if (isTerminal(event.type)) sse.end();
      });
      // The client leaving stops the stream, never the reply.
      sse.closed.signal.addEventListener('abort', unsubscribe);
      return reply;
    }
    const stored = await run.done;
    if (stored.status === 'failed') {
      const status = FAILED_REPLY_STATUS[stored.errorCode ?? ''] ?? (stored.errorCode?.startsWith('provider_') ? 502 : 500);
      throw new HttpProblem(status, stored.errorCode ?? 'internal_error', stored.errorDetail ?? undefined, {
        extensions: { userMessage, assistantMessage: messageView(stored) },
      });
    }
    return reply.code(201).send({ userMessage, assistantMessage: messageView(stored) });
  }

  app.get(
    '/api/v1/chats/:id/messages',
    {
      schema: {
        tags,
        security,
        summary: "A chat's messages, oldest first",
        params: IdParams,
        querystring: PageQuery,
        response: { 200: pageSchema(Message), ...problemResponses(400, 401, 404) },
      },
    },
    async (request) => messages.list(caller(request), request.params.id, request.query),
  );

  app.post(
    '/api/v1/chats/:id/messages',
    {
      schema: {
        tags,
        security,
        summary: 'Send a message and get the reply',
        description: `${SSE_DESCRIPTION} Without it: 201 once the reply has ended (502 when it failed). With \`async: true\`: 202 at once, the reply \`queued\` for the worker.`,
        params: IdParams,
        body: SendBody,
        response: { 200: EventStream, 201: Turn, 202: Turn, ...problemResponses(400, 401, 404, 429, 500, 502, 503) },
      },
    },
    async (request, reply) => respond(request, reply, await messages.send(caller(request), request.params.id, request.body)),
  );

  app.get(
    '/api/v1/chats/:id/messages/:messageId',
    {
      schema: { tags, security, summary: 'Read a message', params: MessageParams, response: { 200: Message, ...problemResponses(401, 404) } },
    },
    async (request) => messageView(await messages.require(caller(request), request.params.id, request.params.messageId)),
  );

  app.get(
    '/api/v1/chats/:id/messages/:messageId/stream',
    {
      schema: {
        tags,
        security,
        summary: 'Follow or replay a reply',
        description:
          'SSE of the reply, in progress or finished: every event after `Last-Event-ID` (header, or `lastEventId` in the query), none twice. Ends after `done` or `error`.',
        params: MessageParams,
        querystring: Type.Object({ lastEventId: Type.Optional(Type.Integer({ minimum: 0 })) }),
        response: { 200: EventStream, ...problemResponses(401, 404) },
      },
    },
    async (request, reply) => {
      const row = await messages.require(caller(request), request.params.id, request.params.messageId);
      if (row.role !== 'assistant') throw new HttpProblem(404, 'not_found', 'Only replies have a stream.');
      const after = lastEventIdOf(request, request.query);
      const sse = new SseStream(request, reply, heartbeatMs);
      try {
        await replay.replay(row, after, (event) => sse.send(event), sse.closed.signal);
      } catch (error) {
        request.log.error({ err: error }, 'reply replay failed');
      } finally {
        sse.end();
      }
      return reply;
    },
  );

  app.post(
    '/api/v1/chats/:id/messages/:messageId/cancel',
    {
      schema: {
        tags,
        security,
        summary: 'Stop a reply',
        description: 'The provider request is aborted at once; the reply is stored `cancelled` with the text produced so far.',
        params: MessageParams,
        response: { 202: Type.Object({ id: Uuid, status: Type.String() }), ...problemResponses(401, 404) },
      },
    },
    async (request, reply) => {
      const row = await messages.cancel(caller(request), request.params.id, request.params.messageId);
      return reply.code(202).send({ id: row.id, status: row.status });
    },
  );

  // The gateway's WebSocket `chat.cancel` names only the reply: a socket that has seen none of its
  // events (new, reconnected, or the reply still queued) does not know its chat. Not public: the
  // gateway routes no /internal path, and calls this with the user's signed context.
  app.post(
    '/internal/v1/messages/:messageId/cancel',
    {
      schema: { hide: true, params: Type.Object({ messageId: Uuid }), response: { 202: Type.Object({ id: Uuid, status: Type.String() }), ...problemResponses(400, 401, 404) } },
    },
    async (request, reply) => {
      const row = await messages.cancelById(caller(request), request.params.messageId);
      return reply.code(202).send({ id: row.id, status: row.status });
    },
  );

  app.post(
    '/api/v1/chats/:id/messages/:messageId/regenerate',
    {
      // The body is optional: no body means no options.
      preValidation: async (request) => {
        request.body ??= {};
      },
      schema: {
        tags,
        security,
        summary: 'A new reply to the same user message',
        description: `\`messageId\` is a reply (or the user message it answers). Answered like sending a message. ${SSE_DESCRIPTION}`,
        params: MessageParams,
        body: Type.Object(replyOptions, { additionalProperties: false, description: 'optional: an empty request asks for a reply like the last one' }),
        response: { 200: EventStream, 201: Turn, 202: Turn, ...problemResponses(400, 401, 404, 429, 500, 502, 503) },
      },
    },
    async (request, reply) => respond(request, reply, await messages.regenerate(caller(request), request.params.id, request.params.messageId, request.body)),
  );
}
