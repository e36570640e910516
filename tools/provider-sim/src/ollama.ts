// Ollama /api/chat, as docs/api.md in the Ollama repository documents it: newline-delimited JSON
// objects with done:false, then one done:true object carrying done_reason and the counters
// (durations in nanoseconds). Ollama has no API keys; errors are {"error": "..."}.
import { inlineImage, imageLabel } from './images.js';
import {
  MISSING_MODEL_PREFIX,
  num,
  type ErrorKind,
  type ErrorResponse,
  type ParsedRequest,
  type ProtocolHandler,
  type ReplyContext,
  type StreamRenderer,
} from './protocol.js';
import type { ImageRecord } from './types.js';

function err(message: string): string {
  return JSON.stringify({ error: message });
}

function ollamaError(kind: ErrorKind, status: number, message?: string, retryAfter = 1): ErrorResponse {
  const headers: Record<string, string> = {};
  if (kind === 'rate-limit') headers['retry-after'] = String(retryAfter);
  const fallback =
    kind === 'rate-limit'
      ? 'too many requests, please retry later'
      : kind === 'server'
        ? status === 503
          ? 'server busy, please try again.  maximum pending requests exceeded'
          : 'an error was encountered while running the model'
        : 'invalid request';
  return { status, headers, body: err(message ?? fallback) };
}

let lastMs = 0;
let lastIso = '';
/** created_at for every chunk; formatting a Date per chunk is avoidable work at high rates. */
function nowIso(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

function parse(body: unknown): ParsedRequest | ErrorResponse {
  const b = (body ?? {}) as Record<string, unknown>;
  if (typeof b.model !== 'string' || b.model === '')
    return ollamaError('bad-request', 400, 'model is required');
  if (b.model.startsWith(MISSING_MODEL_PREFIX)) {
    return ollamaError('model-not-found', 404, `model "${b.model}" not found, try pulling it first`);
  }
  if (!Array.isArray(b.messages) || b.messages.length === 0) {
    return ollamaError('bad-request', 400, 'messages are required');
  }
  let chars = 0;
  let lastUserText = '';
  const images: ImageRecord[] = [];
  b.messages.forEach((m: unknown, i: number) => {
    const msg = (m ?? {}) as Record<string, unknown>;
    const text = typeof msg.content === 'string' ? msg.content : '';
    chars += text.length;
    if (msg.role === 'user') lastUserText = text;
    if (Array.isArray(msg.images)) {
      // Ollama takes bare base64 without a media type.
      msg.images.forEach((img: unknown, j: number) =>
        images.push(inlineImage('ollama', `messages[${i}].images[${j}]`, '', img)),
      );
    }
  });
  const opts = (b.options ?? {}) as Record<string, unknown>;
  const np = num(opts.num_predict);
  return {
    model: b.model,
    // Ollama streams unless told otherwise.
    stream: b.stream !== false,
    maxTokens: np !== undefined && np >= 0 ? np : undefined,
    images,
    prompt: { chars, lastUserText, imageCount: images.length, imageTypes: images.map(imageLabel) },
  };
}

function counters(ctx: ReplyContext): string {
  const total = Number(process.hrtime.bigint() - ctx.startNs);
  const load = Math.min(1_000_000, Math.floor(total / 10));
  const promptEval = Math.floor((total - load) / 5);
  const evalDur = Math.max(1, total - load - promptEval);
  return (
    `"total_duration":${total},"load_duration":${load},"prompt_eval_count":${ctx.reply.promptTokens},` +
    `"prompt_eval_duration":${promptEval},"eval_count":${ctx.reply.completionTokens},"eval_duration":${evalDur}`
  );
}

function stream(ctx: ReplyContext): StreamRenderer {
  const model = JSON.stringify(ctx.req.model);
  const reason = ctx.reply.truncated ? 'length' : 'stop';
  return {
    contentType: 'application/x-ndjson',
    preamble: () => '',
    token: (piece) =>
      `{"model":${model},"created_at":"${nowIso()}","message":{"role":"assistant","content":${JSON.stringify(piece)}},"done":false}\n`,
    epilogue: () =>
      `{"model":${model},"created_at":"${nowIso()}","message":{"role":"assistant","content":""},"done_reason":"${reason}","done":true,${counters(ctx)}}\n`,
    streamError: () => `${err('an error was encountered while running the model: unexpected EOF')}\n`,
  };
}

function json(ctx: ReplyContext): string {
  return (
    `{"model":${JSON.stringify(ctx.req.model)},"created_at":"${nowIso()}","message":{"role":"assistant","content":${JSON.stringify(ctx.reply.text)}},` +
    `"done_reason":"${ctx.reply.truncated ? 'length' : 'stop'}","done":true,${counters(ctx)}}`
  );
}

export const ollamaChat: ProtocolHandler = {
  protocol: 'ollama',
  route: 'ollama.chat',
  idPrefix: '',
  auth: () => undefined,
  parse: (body) => parse(body),
  successHeaders: () => ({}),
  stream: (ctx) => stream(ctx),
  json,
  error: ollamaError,
};

export function ollamaTags(models: readonly string[]): string {
  return JSON.stringify({
    models: models.map((m) => {
      const name = m.includes(':') ? m : `${m}:latest`;
      return {
        name,
        model: name,
        modified_at: '2025-01-01T00:00:00Z',
        size: 2_019_393_189,
        digest: 'a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72',
        details: {
          parent_model: '',
          format: 'gguf',
          family: 'llama',
          families: ['llama'],
          parameter_size: '3.2B',
          quantization_level: 'Q4_K_M',
        },
      };
    }),
  });
}

export { ollamaError };
