// Anthropic Messages, as the API reference ("Streaming Messages", "Errors") documents it and as
// @anthropic-ai/sdk parses it (src/core/streaming.ts: named events, `ping` skipped, `event: error`
// thrown as an APIError carrying error.type).
import { imageLabel, inlineImage, urlImage } from './images.js';
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

const TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  500: 'api_error',
  502: 'api_error',
  503: 'api_error',
  504: 'timeout_error',
  529: 'overloaded_error',
};

const SERVER_MESSAGES: Record<number, string> = {
  500: 'Internal server error',
  502: 'Bad gateway',
  503: 'Service unavailable',
  504: 'Request timed out',
  529: 'Overloaded',
};

function errorBody(type: string, message: string, requestId: string): string {
  return JSON.stringify({ type: 'error', error: { type, message }, request_id: requestId });
}

function rateHeaders(remaining: number, resetAt: Date): Record<string, string> {
  const reset = resetAt.toISOString().replace(/\.\d{3}Z$/, 'Z');
  const h: Record<string, string> = {};
  for (const [kind, limit] of [
    ['requests', 4000],
    ['tokens', 2_000_000],
    ['input-tokens', 1_600_000],
    ['output-tokens', 400_000],
  ] as const) {
    h[`anthropic-ratelimit-${kind}-limit`] = String(limit);
    h[`anthropic-ratelimit-${kind}-remaining`] = String(remaining === 0 ? 0 : limit - 1);
    h[`anthropic-ratelimit-${kind}-reset`] = reset;
  }
  return h;
}

function anthropicError(kind: ErrorKind, status: number, message?: string, retryAfter = 1): ErrorResponse {
  const requestId = newId('req_');
  const headers: Record<string, string> = { 'request-id': requestId };
  const type = TYPES[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error');
  let msg = message;
  switch (kind) {
    case 'auth-missing':
      msg ??= 'x-api-key header is required';
      break;
    case 'auth-invalid':
      msg ??= 'invalid x-api-key';
      break;
    case 'rate-limit':
      Object.assign(headers, rateHeaders(0, new Date(Date.now() + retryAfter * 1000)), {
        'retry-after': String(retryAfter),
      });
      msg ??= 'Number of requests has exceeded your rate limit. Please try again later.';
      break;
    case 'server':
      msg ??= SERVER_MESSAGES[status] ?? 'Internal server error';
      break;
    case 'too-large':
      msg ??= 'Request exceeds the maximum allowed number of bytes.';
      break;
    default:
      msg ??= 'Invalid request';
  }
  return { status, headers, body: errorBody(type, msg, requestId) };
}

function auth(input: RouteInput, requireAuth: boolean): ErrorResponse | undefined {
  if (requireAuth) {
    const x = input.headers['x-api-key'];
    const key = typeof x === 'string' && x !== '' ? x : bearer(input.headers);
    if (key === undefined || key === '') return anthropicError('auth-missing', 401);
    if (key.startsWith(INVALID_KEY_PREFIX)) return anthropicError('auth-invalid', 401);
  }
  if (typeof input.headers['anthropic-version'] !== 'string') {
    return anthropicError('bad-request', 400, 'anthropic-version: header is required');
  }
  return undefined;
}

function blocksText(content: unknown, path: string, images: ImageRecord[]): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  let text = '';
  content.forEach((b: unknown, j: number) => {
    const block = (b ?? {}) as Record<string, unknown>;
    if (block.type === 'text' && typeof block.text === 'string') text += block.text;
    if (block.type === 'image') {
      const src = (block.source ?? {}) as Record<string, unknown>;
      const where = `${path}[${j}]`;
      if (src.type === 'base64') {
        images.push(
          inlineImage('anthropic', where, typeof src.media_type === 'string' ? src.media_type : '', src.data),
        );
      } else if (src.type === 'url') {
        images.push(urlImage('anthropic', where, src.url));
      }
    }
  });
  return text;
}

function parse(body: unknown): ParsedRequest | ErrorResponse {
  const b = (body ?? {}) as Record<string, unknown>;
  if (typeof b.model !== 'string' || b.model === '')
    return anthropicError('bad-request', 400, 'model: Field required');
  if (b.model.startsWith(MISSING_MODEL_PREFIX))
    return anthropicError('model-not-found', 404, `model: ${b.model}`);
  // max_tokens is mandatory on the real API; adapters that forget it must find out here.
  const maxTokens = num(b.max_tokens);
  if (maxTokens === undefined) return anthropicError('bad-request', 400, 'max_tokens: Field required');
  if (!Array.isArray(b.messages) || b.messages.length === 0) {
    return anthropicError('bad-request', 400, 'messages: at least one message is required');
  }
  const images: ImageRecord[] = [];
  let chars = blocksText(b.system, 'system', images).length;
  let lastUserText = '';
  b.messages.forEach((m: unknown, i: number) => {
    const msg = (m ?? {}) as Record<string, unknown>;
    const text = blocksText(msg.content, `messages[${i}].content`, images);
    chars += text.length;
    if (msg.role === 'user') lastUserText = text;
  });
  return {
    model: b.model,
    stream: b.stream === true,
    maxTokens,
    images,
    prompt: { chars, lastUserText, imageCount: images.length, imageTypes: images.map(imageLabel) },
  };
}

function usage(ctx: ReplyContext, output: number): Record<string, number> {
  return {
    input_tokens: ctx.reply.promptTokens,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 0,
    output_tokens: output,
  };
}

function ev(type: string, json: string): string {
  return `event: ${type}\ndata: ${json}\n\n`;
}

function stream(ctx: ReplyContext): StreamRenderer {
  const stop = ctx.reply.truncated ? 'max_tokens' : 'end_turn';
  return {
    contentType: 'text/event-stream; charset=utf-8',
    preamble: () =>
      ev(
        'message_start',
        JSON.stringify({
          type: 'message_start',
          message: {
            id: ctx.id,
            type: 'message',
            role: 'assistant',
            model: ctx.req.model,
            content: [],
            stop_reason: null,
            stop_sequence: null,
            // The documented message_start carries a provisional output count; the final total
            // arrives in message_delta.usage.output_tokens (cumulative, not an increment).
            usage: usage(ctx, 1),
          },
        }),
      ) +
      ev(
        'content_block_start',
        '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
      ) +
      ev('ping', '{"type": "ping"}'),
    token: (piece) =>
      `event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":${JSON.stringify(piece)}}}\n\n`,
    epilogue: () =>
      ev('content_block_stop', '{"type":"content_block_stop","index":0}') +
      ev(
        'message_delta',
        `{"type":"message_delta","delta":{"stop_reason":"${stop}","stop_sequence":null},"usage":{"output_tokens":${ctx.reply.completionTokens}}}`,
      ) +
      ev('message_stop', '{"type":"message_stop"}'),
    streamError: () =>
      ev('error', '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'),
  };
}

function json(ctx: ReplyContext): string {
  return JSON.stringify({
    id: ctx.id,
    type: 'message',
    role: 'assistant',
    model: ctx.req.model,
    content: [{ type: 'text', text: ctx.reply.text }],
    stop_reason: ctx.reply.truncated ? 'max_tokens' : 'end_turn',
    stop_sequence: null,
    usage: usage(ctx, ctx.reply.completionTokens),
  });
}

export const anthropicMessages: ProtocolHandler = {
  protocol: 'anthropic',
  route: 'anthropic.messages',
  idPrefix: 'msg_',
  auth,
  parse: (body) => parse(body),
  successHeaders: () => ({ 'request-id': newId('req_'), ...rateHeaders(1, new Date(Date.now() + 60_000)) }),
  stream: (ctx) => stream(ctx),
  json,
  error: anthropicError,
};

export function anthropicModelList(models: readonly string[]): string {
  const data = models.map((id) => ({
    type: 'model',
    id,
    display_name: id,
    created_at: '2025-01-01T00:00:00Z',
  }));
  return JSON.stringify({
    data,
    has_more: false,
    first_id: data[0]?.id ?? null,
    last_id: data.at(-1)?.id ?? null,
  });
}

export { anthropicError, auth as anthropicAuth };
