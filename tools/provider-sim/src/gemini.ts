// Gemini generateContent / streamGenerateContent (Google AI, v1beta and v1), as the API reference
// documents the GenerateContentResponse and as @google/genai reads the SSE form
// (`?alt=sse`, one `data: <json>` line per event). The real service frames events with CRLF
// ("\r\n\r\n"), which is what this simulator sends too, so adapters must accept it.
// Without alt=sse the service streams one JSON array instead; that form is supported as well.
import { imageLabel, inlineImage, urlImage } from './images.js';
import {
  INVALID_KEY_PREFIX,
  MISSING_MODEL_PREFIX,
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

const STATUS: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  413: 'INVALID_ARGUMENT',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  502: 'UNAVAILABLE',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED',
  529: 'UNAVAILABLE',
};

const SERVER_MESSAGES: Record<number, string> = {
  500: 'An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting',
  502: 'The service is currently unavailable.',
  503: 'The model is overloaded. Please try again later.',
  504: 'Deadline expired before operation could complete.',
  529: 'The model is overloaded. Please try again later.',
};

function errorJson(code: number, message: string, details?: unknown[]): string {
  const error: Record<string, unknown> = {
    code,
    message,
    status: STATUS[code] ?? (code >= 500 ? 'INTERNAL' : 'INVALID_ARGUMENT'),
  };
  if (details) error.details = details;
  return JSON.stringify({ error });
}

function geminiError(kind: ErrorKind, status: number, message?: string, retryAfter = 1): ErrorResponse {
  const headers: Record<string, string> = {};
  let body: string;
  switch (kind) {
    case 'auth-missing':
      body = errorJson(
        403,
        message ??
          "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
      );
      return { status: 403, headers, body };
    case 'auth-invalid':
      body = errorJson(400, message ?? 'API key not valid. Please pass a valid API key.', [
        {
          '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
          reason: 'API_KEY_INVALID',
          domain: 'googleapis.com',
          metadata: { service: 'generativelanguage.googleapis.com' },
        },
      ]);
      return { status: 400, headers, body };
    case 'rate-limit':
      // Google announces the wait in a RetryInfo detail; Retry-After is added for HTTP-level clients.
      headers['retry-after'] = String(retryAfter);
      body = errorJson(
        429,
        message ?? 'You exceeded your current quota, please check your plan and billing details.',
        [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${retryAfter}s` }],
      );
      return { status: 429, headers, body };
    case 'server':
      return {
        status,
        headers,
        body: errorJson(status, message ?? SERVER_MESSAGES[status] ?? 'Internal error.'),
      };
    case 'too-large':
      return {
        status,
        headers,
        body: errorJson(status, message ?? 'Request payload size exceeds the limit.'),
      };
    default:
      return { status, headers, body: errorJson(status, message ?? 'Invalid request.') };
  }
}

function apiKey(input: RouteInput): string | undefined {
  const h = input.headers['x-goog-api-key'];
  if (typeof h === 'string' && h !== '') return h;
  if (input.query.includes('key=')) {
    const k = new URLSearchParams(input.query).get('key');
    if (k) return k;
  }
  return undefined;
}

function auth(input: RouteInput, requireAuth: boolean): ErrorResponse | undefined {
  if (!requireAuth) return undefined;
  const key = apiKey(input);
  if (key === undefined) return geminiError('auth-missing', 403);
  if (key.startsWith(INVALID_KEY_PREFIX)) return geminiError('auth-invalid', 400);
  return undefined;
}

function partsText(parts: unknown, path: string, images: ImageRecord[]): string {
  if (!Array.isArray(parts)) return '';
  let text = '';
  parts.forEach((p: unknown, j: number) => {
    const part = (p ?? {}) as Record<string, unknown>;
    if (typeof part.text === 'string') text += part.text;
    // The REST API accepts both the proto field names and their lowerCamel JSON names.
    const inline = (part.inline_data ?? part.inlineData) as Record<string, unknown> | undefined;
    if (inline) {
      const mime = inline.mime_type ?? inline.mimeType;
      images.push(inlineImage('gemini', `${path}[${j}]`, typeof mime === 'string' ? mime : '', inline.data));
    }
    const file = (part.file_data ?? part.fileData) as Record<string, unknown> | undefined;
    if (file) {
      const mime = file.mime_type ?? file.mimeType;
      images.push(
        urlImage(
          'gemini',
          `${path}[${j}]`,
          file.file_uri ?? file.fileUri,
          typeof mime === 'string' ? mime : '',
        ),
      );
    }
  });
  return text;
}

function parse(body: unknown, input: RouteInput): ParsedRequest | ErrorResponse {
  const b = (body ?? {}) as Record<string, unknown>;
  const model = (input.pathModel ?? '').replace(/^models\//, '');
  if (model.startsWith(MISSING_MODEL_PREFIX)) {
    return geminiError(
      'model-not-found',
      404,
      `models/${model} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.`,
    );
  }
  if (!Array.isArray(b.contents) || b.contents.length === 0) {
    return geminiError('bad-request', 400, '* GenerateContentRequest.contents: contents is not specified\n');
  }
  const images: ImageRecord[] = [];
  const sys = (b.systemInstruction ?? b.system_instruction) as Record<string, unknown> | undefined;
  let chars = sys ? partsText(sys.parts, 'systemInstruction.parts', images).length : 0;
  let lastUserText = '';
  b.contents.forEach((c: unknown, i: number) => {
    const content = (c ?? {}) as Record<string, unknown>;
    const text = partsText(content.parts, `contents[${i}].parts`, images);
    chars += text.length;
    // role is optional for single-turn requests and then means "user".
    if (content.role === undefined || content.role === 'user') lastUserText = text;
  });
  const gc = (b.generationConfig ?? b.generation_config ?? {}) as Record<string, unknown>;
  return {
    model,
    stream: input.variant !== 'generate',
    maxTokens: num(gc.maxOutputTokens) ?? num(gc.max_output_tokens),
    images,
    prompt: { chars, lastUserText, imageCount: images.length, imageTypes: images.map(imageLabel) },
  };
}

function usage(ctx: ReplyContext, candidates: number, details: boolean): string {
  const p = ctx.reply.promptTokens;
  const extra = details ? `,"promptTokensDetails":[{"modality":"TEXT","tokenCount":${p}}]` : '';
  return `{"promptTokenCount":${p},"candidatesTokenCount":${candidates},"totalTokenCount":${p + candidates}${extra}}`;
}

function stream(ctx: ReplyContext, input: RouteInput): StreamRenderer {
  const sse = input.variant === 'sse';
  const tailStr = `,"modelVersion":${JSON.stringify(ctx.req.model)},"responseId":"${ctx.id}"}`;
  const finish = ctx.reply.truncated ? 'MAX_TOKENS' : 'STOP';
  // SSE: each response is one `data:` line (the SDK's parser requires the JSON on one line).
  // JSON array: "[" resp ",\r\n" resp ... "]".
  const wrap = (json: string, first: boolean): string =>
    sse ? `data: ${json}\r\n\r\n` : first ? json : `,\r\n${json}`;
  return {
    contentType: sse ? 'text/event-stream' : 'application/json; charset=UTF-8',
    preamble: () => (sse ? '' : '['),
    token: (piece, i) =>
      wrap(
        `{"candidates":[{"content":{"parts":[{"text":${JSON.stringify(piece)}}],"role":"model"},"index":0}],"usageMetadata":${usage(ctx, i + 1, false)}${tailStr}`,
        i === 0,
      ),
    epilogue: (n) =>
      wrap(
        `{"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"finishReason":"${finish}","index":0}],"usageMetadata":${usage(ctx, ctx.reply.completionTokens, true)}${tailStr}`,
        n === 0,
      ) + (sse ? '' : ']'),
    streamError: (n) => wrap(errorJson(503, SERVER_MESSAGES[503]!), n === 0) + (sse ? '' : ']'),
  };
}

function json(ctx: ReplyContext): string {
  return (
    `{"candidates":[{"content":{"parts":[{"text":${JSON.stringify(ctx.reply.text)}}],"role":"model"},"finishReason":"${ctx.reply.truncated ? 'MAX_TOKENS' : 'STOP'}","index":0}],` +
    `"usageMetadata":${usage(ctx, ctx.reply.completionTokens, true)},"modelVersion":${JSON.stringify(ctx.req.model)},"responseId":"${ctx.id}"}`
  );
}

export const geminiGenerate: ProtocolHandler = {
  protocol: 'gemini',
  route: 'gemini.generate',
  idPrefix: '',
  auth,
  parse,
  successHeaders: () => ({}),
  stream,
  json,
  error: geminiError,
};

export const geminiStream: ProtocolHandler = { ...geminiGenerate, route: 'gemini.stream' };

export function geminiModelList(models: readonly string[]): string {
  return JSON.stringify({
    models: models.map((m) => ({
      name: `models/${m}`,
      version: '001',
      displayName: m,
      description: 'provider-sim model',
      inputTokenLimit: 1_048_576,
      outputTokenLimit: 8192,
      supportedGenerationMethods: ['generateContent', 'countTokens'],
    })),
  });
}

export { geminiError, auth as geminiAuth };
