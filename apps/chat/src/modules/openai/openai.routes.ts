import { Type } from '@sinclair/typebox';
import { caller, HttpProblem, openAiErrorsOnSend, requireIdentity, type ServiceApp } from '@vivier/service-kit';
import type { CompletionBody, OpenAiService } from './openai.service';

const tags = ['openai'];
const security = [{ bearer: [] }];

const ContentPart = Type.Object({ type: Type.String() }, { additionalProperties: true });
const CompletionRequest = Type.Object(
  {
    model: Type.String({ minLength: 1, maxLength: 256 }),
    messages: Type.Array(
      Type.Object(
        { role: Type.String({ minLength: 1 }), content: Type.Union([Type.String(), Type.Array(ContentPart), Type.Null()]) },
        { additionalProperties: true },
      ),
      { minItems: 1, maxItems: 10_000 },
    ),
    stream: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    stream_options: Type.Optional(Type.Union([Type.Object({ include_usage: Type.Optional(Type.Boolean()) }, { additionalProperties: true }), Type.Null()])),
    max_tokens: Type.Optional(Type.Union([Type.Integer({ minimum: 1 }), Type.Null()])),
    max_completion_tokens: Type.Optional(Type.Union([Type.Integer({ minimum: 1 }), Type.Null()])),
    temperature: Type.Optional(Type.Union([Type.Number({ minimum: 0, maximum: 2 }), Type.Null()])),
    top_p: Type.Optional(Type.Union([Type.Number({ minimum: 0, maximum: 1 }), Type.Null()])),
    stop: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String(), { maxItems: 4 }), Type.Null()])),
    n: Type.Optional(Type.Union([Type.Literal(1), Type.Null()], { description: 'only 1 is supported' })),
  },
  { additionalProperties: true, description: 'OpenAI Chat Completions request. Refused with 400 `unsupported_parameter` (its `param` named): non-empty `tools` or `functions`, `tool_choice` / `function_call` other than none or auto, `response_format` other than text. Other parameters not listed are accepted and ignored (sampling hints such as seed or penalties).' },
);

// Errors are not described per status: they are problem details until the onSend hook turns them
// into OpenAI's `{error: {message, type, param, code}}` (see the route descriptions).
const ERRORS_NOTE = ' Errors come in OpenAI’s shape `{error: {message, type, param, code}}` with its statuses (400, 401, 404 `model_not_found`, 429 `rate_limit_exceeded` / `insufficient_quota`, 502, 504).';

/**
 * The OpenAI-compatible API (API keys or access tokens, checked at the gateway): what the official
 * SDKs send, answered in OpenAI's shapes, errors included, streamed without buffering.
 */
export async function openAiRoutes(app: ServiceApp, { openai }: { openai: OpenAiService }): Promise<void> {
  app.addHook('preHandler', requireIdentity);
  app.addHook('onSend', openAiErrorsOnSend);

  app.get(
    '/v1/models',
    {
      schema: {
        tags,
        security,
        summary: 'Models (OpenAI format)',
        description: `The models this deployment serves, as OpenAI lists them.${ERRORS_NOTE}`,
        response: { 200: Type.Object({ object: Type.Literal('list'), data: Type.Array(Type.Object({ id: Type.String(), object: Type.Literal('model'), created: Type.Integer(), owned_by: Type.String() })) }) },
      },
    },
    async () => openai.models(),
  );

  app.post(
    '/v1/chat/completions',
    {
      schema: {
        tags,
        security,
        summary: 'Chat completion (OpenAI format)',
        description:
          `As OpenAI’s Chat Completions: \`stream: true\` answers \`text/event-stream\` chunks ending with \`data: [DONE]\`; with \`stream_options.include_usage\` the last chunk before it has empty \`choices\` and the usage. Counted against the monthly quota and in usage like any reply.${ERRORS_NOTE}`,
        body: CompletionRequest,
        response: { 200: { description: 'a chat.completion object, or with stream: true an SSE stream of chat.completion.chunk objects', content: { 'application/json': { schema: Type.Object({}, { additionalProperties: true }) }, 'text/event-stream': { schema: Type.String() } } } },
      },
    },
    async (request, reply) => {
      const body = request.body as CompletionBody;
      const user = caller(request);
      // Watched from the start: a client that leaves while its quota is being reserved gets no
      // provider call (run() starts none for an aborted signal), and nothing is counted.
      const gone = new AbortController();
      const onClose = () => {
        if (!reply.raw.writableFinished) gone.abort();
      };
      reply.raw.once('close', onClose);
      let prepared: Awaited<ReturnType<OpenAiService['prepare']>>;
      try {
        prepared = await openai.prepare(user, body);
      } catch (error) {
        reply.raw.off('close', onClose);
        throw error;
      }
      const completionId = `chatcmpl-${prepared.id}`;

      if (!body.stream) {
        const outcome = await openai.run(user, body, prepared, gone.signal, () => undefined);
        reply.raw.off('close', onClose);
        // Cut after some text: a 200 with that text would pass for a whole answer. (It is settled
        // and counted as generated all the same.)
        if (outcome.status === 'failed')
          throw new HttpProblem(
            502,
            outcome.error?.code ?? 'stream_interrupted',
            `The provider stopped after part of the answer: ${outcome.error?.detail ?? 'no reason given'}`,
          );
        return {
          id: completionId,
          object: 'chat.completion',
          created: prepared.created,
          model: outcome.model,
          choices: [{ index: 0, message: { role: 'assistant', content: outcome.text, refusal: null }, logprobs: null, finish_reason: outcome.finishReason }],
          usage: { prompt_tokens: outcome.promptTokens, completion_tokens: outcome.completionTokens, total_tokens: outcome.promptTokens + outcome.completionTokens },
        };
      }

      // The head goes out with the first text, so a provider that fails before any answers with
      // a real status (and the SDK's error class), not with an empty 200 stream.
      const includeUsage = body.stream_options?.include_usage === true;
      let model = body.model;
      let started = false;
      const write = (data: unknown) => {
        if (!gone.signal.aborted) reply.raw.write(`data: ${JSON.stringify(data)}\n\n`);
      };
      const chunk = (delta: Record<string, unknown>, finishReason: string | null) => ({
        id: completionId,
        object: 'chat.completion.chunk',
        created: prepared.created,
        model,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
        ...(includeUsage ? { usage: null } : {}),
      });
      const start = () => {
        if (started) return;
        started = true;
        reply.hijack();
        reply.raw.writeHead(200, {
          ...(reply.getHeaders() as Record<string, string>),
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-cache, no-transform',
          'x-accel-buffering': 'no',
          connection: 'keep-alive',
          'x-request-id': request.id,
        });
        write(chunk({ role: 'assistant', content: '', refusal: null }, null));
      };
      const outcome = await openai.run(user, body, prepared, gone.signal, (text, resolved) => {
        model = resolved;
        start();
        write(chunk({ content: text }, null));
      });
      model = outcome.model;
      start();
      if (outcome.status === 'failed') {
        write({ error: { message: outcome.error?.detail ?? 'The completion was interrupted.', type: 'server_error', param: null, code: outcome.error?.code ?? null } });
      } else {
        write(chunk({}, outcome.finishReason));
        if (includeUsage) {
          write({
            id: completionId,
            object: 'chat.completion.chunk',
            created: prepared.created,
            model,
            choices: [],
            usage: { prompt_tokens: outcome.promptTokens, completion_tokens: outcome.completionTokens, total_tokens: outcome.promptTokens + outcome.completionTokens },
          });
        }
      }
      if (!gone.signal.aborted) reply.raw.end('data: [DONE]\n\n');
      reply.raw.off('close', onClose);
      return reply;
    },
  );
}
