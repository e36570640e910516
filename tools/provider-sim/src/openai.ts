// OpenAI Chat Completions and Responses, as documented in the API reference and as the official
// `openai` SDK parses them (src/core/streaming.ts: `data: [DONE]` ends the stream, a data object
// with an `error` key throws, a named `event: error` throws for Responses).
// OpenAI-compatible servers (vLLM, LM Studio, Groq) speak the same chat protocol.
import { imageLabel, urlImage } from './images.js';
import {
  INVALID_KEY_PREFIX,
  MISSING_MODEL_PREFIX,
  bearer,
  newId,
  num,
  type ErrorKind,
  type ErrorResponse,
  type ParsedRequest,
  type ProtocolHandler,
  type ReplyContext,
  type RouteInput,
  type StreamRenderer,
} from './protocol.js';
import type { ImageRecord } from './types.js';

const FINGERPRINT = 'fp_provsim';
const SSE = 'text/event-stream; charset=utf-8';

const MESSAGES: Record<number, string> = {
  500: 'The server had an error while processing your request. Sorry about that!',
  502: 'Bad gateway.',
  503: 'The server is overloaded or not ready yet.',
  504: 'The server did not respond in time.',
  529: 'The server is overloaded or not ready yet.',
};

function errorBody(message: string, type: string, param: string | null, code: string | null): string {
  return JSON.stringify({ error: { message, type, param, code } });
}

/** Static rate-limit headers in the form OpenAI sends on every response. */
function rateHeaders(remainingRequests: number, reset: string): Record<string, string> {
  return {
    'x-ratelimit-limit-requests': '10000',
    'x-ratelimit-remaining-requests': String(remainingRequests),
    'x-ratelimit-reset-requests': reset,
    'x-ratelimit-limit-tokens': '10000000',
    'x-ratelimit-remaining-tokens': remainingRequests === 0 ? '0' : '9999000',
    'x-ratelimit-reset-tokens': reset,
  };
}

function openaiError(kind: ErrorKind, status: number, message?: string, retryAfter = 1): ErrorResponse {
  const headers: Record<string, string> = { 'x-request-id': newId('req_') };
  let body: string;
  switch (kind) {
    case 'auth-missing':
      body = errorBody(
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        'invalid_request_error',
        null,
        null,
      );
      break;
    case 'auth-invalid':
      body = errorBody(
        message ?? 'Incorrect API key provided.',
        'invalid_request_error',
        null,
        'invalid_api_key',
      );
      break;
    case 'model-not-found':
      body = errorBody(
        message ?? 'The model does not exist.',
        'invalid_request_error',
        null,
        'model_not_found',
      );
      break;
    case 'too-large':
      body = errorBody(message ?? 'Request too large.', 'invalid_request_error', null, null);
      break;
    case 'rate-limit':
      Object.assign(headers, rateHeaders(0, `${retryAfter}s`), { 'retry-after': String(retryAfter) });
      body = errorBody(
        message ?? `Rate limit reached for requests. Please try again in ${retryAfter}s.`,
        'requests',
        null,
        'rate_limit_exceeded',
      );
      break;
    case 'server':
      body = errorBody(message ?? MESSAGES[status] ?? 'Server error.', 'server_error', null, null);
      break;
    default:
      body = errorBody(message ?? 'Invalid request.', 'invalid_request_error', null, null);
  }
  return { status, headers, body };
}

function openaiAuth(input: RouteInput, requireAuth: boolean): ErrorResponse | undefined {
  if (!requireAuth) return undefined;
  const key = bearer(input.headers);
  if (key === undefined || key === '') return openaiError('auth-missing', 401);
  if (key.startsWith(INVALID_KEY_PREFIX)) {
    return openaiError('auth-invalid', 401, `Incorrect API key provided: ${key.slice(0, 8)}****.`);
  }
  return undefined;
}

function checkModel(model: unknown): string | ErrorResponse {
  if (typeof model !== 'string' || model === '') {
    return openaiError('bad-request', 400, 'you must provide a model parameter');
  }
  if (model.startsWith(MISSING_MODEL_PREFIX)) {
    return openaiError(
      'model-not-found',
      404,
      `The model \`${model}\` does not exist or you do not have access to it.`,
    );
  }
  return model;
}

function usageObject(ctx: ReplyContext): string {
  const p = ctx.reply.promptTokens;
  const c = ctx.reply.completionTokens;
  return JSON.stringify({
    prompt_tokens: p,
    completion_tokens: c,
    total_tokens: p + c,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: 0,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  });
}

function successHeaders(): Record<string, string> {
  return {
    'x-request-id': newId('req_'),
    'openai-version': '2020-10-01',
    'openai-processing-ms': '1',
    ...rateHeaders(9999, '6ms'),
  };
}

// ---------------------------------------------------------------------------------------------
// Chat Completions

function parseChat(body: unknown): ParsedRequest | ErrorResponse {
  const b = (body ?? {}) as Record<string, unknown>;
  const model = checkModel(b.model);
  if (typeof model !== 'string') return model;
  if (!Array.isArray(b.messages) || b.messages.length === 0) {
    return openaiError('bad-request', 400, "Missing required parameter: 'messages'.");
  }
  let chars = 0;
  let lastUserText = '';
  const images: ImageRecord[] = [];
  b.messages.forEach((m: unknown, i: number) => {
    const msg = (m ?? {}) as Record<string, unknown>;
    let text = '';
    if (typeof msg.content === 'string') {
      text = msg.content;
    } else if (Array.isArray(msg.content)) {
      msg.content.forEach((p: unknown, j: number) => {
        const part = (p ?? {}) as Record<string, unknown>;
        if (part.type === 'text' && typeof part.text === 'string') text += part.text;
        if (part.type === 'image_url') {
          const iu = (part.image_url ?? {}) as Record<string, unknown>;
          images.push(urlImage('openai', `messages[${i}].content[${j}]`, iu.url));
        }
      });
    }
    chars += text.length;
    if (msg.role === 'user') lastUserText = text;
  });
  const so = (b.stream_options ?? {}) as Record<string, unknown>;
  return {
    model,
    stream: b.stream === true,
    maxTokens: num(b.max_completion_tokens) ?? num(b.max_tokens),
    includeUsage: so.include_usage === true,
    images,
    prompt: { chars, lastUserText, imageCount: images.length, imageTypes: images.map(imageLabel) },
  };
}

function chatStream(ctx: ReplyContext): StreamRenderer {
  const { id, created } = ctx;
  const usage = ctx.req.includeUsage === true;
  // Per the API reference, with include_usage every chunk carries "usage": null and one extra
  // chunk with empty choices carries the totals right before [DONE].
  const head =
    `data: {"id":"${id}","object":"chat.completion.chunk","created":${created},"model":${JSON.stringify(ctx.req.model)},` +
    `"service_tier":"default","system_fingerprint":"${FINGERPRINT}","choices":[`;
  const tail = usage ? '],"usage":null}\n\n' : ']}\n\n';
  const finish = ctx.reply.truncated ? 'length' : 'stop';
  return {
    contentType: SSE,
    preamble: () =>
      `${head}{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}${tail}`,
    token: (piece) =>
      `${head}{"index":0,"delta":{"content":${JSON.stringify(piece)}},"logprobs":null,"finish_reason":null}${tail}`,
    epilogue: () => {
      let out = `${head}{"index":0,"delta":{},"logprobs":null,"finish_reason":"${finish}"}${tail}`;
      if (usage) out += `${head}],"usage":${usageObject(ctx)}}\n\n`;
      return `${out}data: [DONE]\n\n`;
    },
    streamError: () =>
      `data: ${errorBody('The server had an error while processing your request. Sorry about that!', 'server_error', null, null)}\n\n`,
  };
}

function chatJson(ctx: ReplyContext): string {
  return JSON.stringify({
    id: ctx.id,
    object: 'chat.completion',
    created: ctx.created,
    model: ctx.req.model,
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: ctx.reply.text, refusal: null, annotations: [] },
        logprobs: null,
        finish_reason: ctx.reply.truncated ? 'length' : 'stop',
      },
    ],
    usage: JSON.parse(usageObject(ctx)) as unknown,
    service_tier: 'default',
    system_fingerprint: FINGERPRINT,
  });
}

export const openaiChat: ProtocolHandler = {
  protocol: 'openai',
  route: 'openai.chat',
  idPrefix: 'chatcmpl-',
  auth: openaiAuth,
  parse: (body) => parseChat(body),
  successHeaders,
  stream: (ctx) => chatStream(ctx),
  json: chatJson,
  error: openaiError,
};

// ---------------------------------------------------------------------------------------------
// Responses API

function parseResponses(body: unknown): ParsedRequest | ErrorResponse {
  const b = (body ?? {}) as Record<string, unknown>;
  const model = checkModel(b.model);
  if (typeof model !== 'string') return model;
  if (b.input === undefined) return openaiError('bad-request', 400, "Missing required parameter: 'input'.");
  let chars = typeof b.instructions === 'string' ? b.instructions.length : 0;
  let lastUserText = '';
  const images: ImageRecord[] = [];
  if (typeof b.input === 'string') {
    chars += b.input.length;
    lastUserText = b.input;
  } else if (Array.isArray(b.input)) {
    b.input.forEach((it: unknown, i: number) => {
      const item = (it ?? {}) as Record<string, unknown>;
      let text = '';
      if (typeof item.content === 'string') text = item.content;
      else if (Array.isArray(item.content)) {
        item.content.forEach((p: unknown, j: number) => {
          const part = (p ?? {}) as Record<string, unknown>;
          if ((part.type === 'input_text' || part.type === 'output_text') && typeof part.text === 'string') {
            text += part.text;
          }
          if (part.type === 'input_image')
            images.push(urlImage('openai', `input[${i}].content[${j}]`, part.image_url));
        });
      }
      chars += text.length;
      if (item.role === 'user') lastUserText = text;
    });
  } else {
    return openaiError('bad-request', 400, "Invalid type for 'input': expected a string or an array.");
  }
  return {
    model,
    stream: b.stream === true,
    maxTokens: num(b.max_output_tokens),
    images,
    prompt: { chars, lastUserText, imageCount: images.length, imageTypes: images.map(imageLabel) },
    extra: {
      instructions: typeof b.instructions === 'string' ? b.instructions : null,
      max_output_tokens: num(b.max_output_tokens) ?? null,
      temperature: num(b.temperature) ?? 1,
      top_p: num(b.top_p) ?? 1,
    },
  };
}

function responseObject(
  ctx: ReplyContext,
  msgId: string,
  state: 'in_progress' | 'done',
): Record<string, unknown> {
  const done = state === 'done';
  const incomplete = done && ctx.reply.truncated;
  const p = ctx.reply.promptTokens;
  const c = ctx.reply.completionTokens;
  const extra = ctx.req.extra ?? {};
  return {
    id: ctx.id,
    object: 'response',
    created_at: ctx.created,
    status: done ? (incomplete ? 'incomplete' : 'completed') : 'in_progress',
    error: null,
    incomplete_details: incomplete ? { reason: 'max_output_tokens' } : null,
    instructions: extra.instructions ?? null,
    max_output_tokens: extra.max_output_tokens ?? null,
    model: ctx.req.model,
    output: done ? [messageItem(ctx, msgId, incomplete ? 'incomplete' : 'completed')] : [],
    parallel_tool_calls: true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    store: true,
    temperature: extra.temperature ?? 1,
    text: { format: { type: 'text' } },
    tool_choice: 'auto',
    tools: [],
    top_p: extra.top_p ?? 1,
    truncation: 'disabled',
    usage: done
      ? {
          input_tokens: p,
          input_tokens_details: { cached_tokens: 0 },
          output_tokens: c,
          output_tokens_details: { reasoning_tokens: 0 },
          total_tokens: p + c,
        }
      : null,
    user: null,
    metadata: {},
  };
}

function messageItem(ctx: ReplyContext, msgId: string, status: string): Record<string, unknown> {
  return {
    id: msgId,
    type: 'message',
    status,
    role: 'assistant',
    content: [{ type: 'output_text', text: ctx.reply.text, annotations: [] }],
  };
}

function event(type: string, data: Record<string, unknown>): string {
  return `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
}

function responsesStream(ctx: ReplyContext): StreamRenderer {
  const msgId = newId('msg_');
  // Every Responses event carries a strictly increasing sequence_number; the preamble uses 0..3.
  const PRE = 4;
  const deltaHead = `event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":`;
  const deltaMid = `,"item_id":"${msgId}","output_index":0,"content_index":0,"delta":`;
  return {
    contentType: SSE,
    preamble: () =>
      event('response.created', { sequence_number: 0, response: responseObject(ctx, msgId, 'in_progress') }) +
      event('response.in_progress', {
        sequence_number: 1,
        response: responseObject(ctx, msgId, 'in_progress'),
      }) +
      event('response.output_item.added', {
        sequence_number: 2,
        output_index: 0,
        item: { id: msgId, type: 'message', status: 'in_progress', role: 'assistant', content: [] },
      }) +
      event('response.content_part.added', {
        sequence_number: 3,
        item_id: msgId,
        output_index: 0,
        content_index: 0,
        part: { type: 'output_text', text: '', annotations: [] },
      }),
    token: (piece, i) => `${deltaHead}${PRE + i}${deltaMid}${JSON.stringify(piece)},"logprobs":[]}\n\n`,
    epilogue: (n) => {
      const s = PRE + n;
      const final = responseObject(ctx, msgId, 'done');
      const status = final.status as string;
      return (
        event('response.output_text.done', {
          sequence_number: s,
          item_id: msgId,
          output_index: 0,
          content_index: 0,
          text: ctx.reply.text,
          logprobs: [],
        }) +
        event('response.content_part.done', {
          sequence_number: s + 1,
          item_id: msgId,
          output_index: 0,
          content_index: 0,
          part: { type: 'output_text', text: ctx.reply.text, annotations: [] },
        }) +
        event('response.output_item.done', {
          sequence_number: s + 2,
          output_index: 0,
          item: messageItem(ctx, msgId, status),
        }) +
        event(status === 'incomplete' ? 'response.incomplete' : 'response.completed', {
          sequence_number: s + 3,
          response: final,
        })
      );
    },
    streamError: (n) =>
      event('error', {
        sequence_number: PRE + n,
        code: 'server_error',
        message: 'The server had an error while processing your request. Sorry about that!',
        param: null,
      }),
  };
}

export const openaiResponses: ProtocolHandler = {
  protocol: 'openai',
  route: 'openai.responses',
  idPrefix: 'resp_',
  auth: openaiAuth,
  parse: (body) => parseResponses(body),
  successHeaders,
  stream: (ctx) => responsesStream(ctx),
  json: (ctx) => JSON.stringify(responseObject(ctx, newId('msg_'), 'done')),
  error: openaiError,
};

// ---------------------------------------------------------------------------------------------
// Models

export function openaiModelList(models: readonly string[]): string {
  return JSON.stringify({
    object: 'list',
    data: models.map((id) => ({ id, object: 'model', created: 1_700_000_000, owned_by: 'provider-sim' })),
  });
}

export function openaiModel(id: string): string {
  return JSON.stringify({ id, object: 'model', created: 1_700_000_000, owned_by: 'provider-sim' });
}

export { openaiAuth, openaiError };
