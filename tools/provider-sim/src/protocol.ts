import type { IncomingHttpHeaders } from 'node:http';
import type { PromptInfo, Reply } from './text.js';
import type { ImageRecord, Protocol } from './types.js';

export type ErrorKind =
  'auth-missing' | 'auth-invalid' | 'bad-request' | 'model-not-found' | 'too-large' | 'rate-limit' | 'server';

export interface ErrorResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export function isErrorResponse(x: unknown): x is ErrorResponse {
  return typeof x === 'object' && x !== null && 'status' in x && 'body' in x;
}

export interface ParsedRequest {
  model: string;
  stream: boolean;
  /** The request's own output cap (max_tokens and friends), if any. */
  maxTokens?: number;
  prompt: PromptInfo;
  images: ImageRecord[];
  /** OpenAI chat only: stream_options.include_usage. */
  includeUsage?: boolean;
  /** Free-form per-protocol values the renderers need (instructions, max_output_tokens...). */
  extra?: Record<string, unknown>;
}

/** Everything a renderer needs to write one reply. */
export interface ReplyContext {
  /** Vendor-style id of this reply (chatcmpl-…, msg_…, resp_…). */
  id: string;
  /** Unix seconds, fixed for the whole reply as OpenAI documents for `created`. */
  created: number;
  req: ParsedRequest;
  reply: Reply;
  /** process.hrtime.bigint() when the request arrived; Ollama reports durations from it. */
  startNs: bigint;
}

/**
 * A streamed reply cut into parts so that the engine can pace, stall, cut or fail it between
 * token chunks without knowing the wire format.
 */
export interface StreamRenderer {
  contentType: string;
  /** Events before the first token (role chunk, message_start...). Always sent whole. */
  preamble(): string;
  /** The event carrying token `index` (0-based). */
  token(piece: string, index: number): string;
  /** Everything after the last token: finish reason, usage, terminator. */
  epilogue(tokensSent: number): string;
  /** The vendor's in-stream error event, used by errorAfterChunks; the engine ends the body after it. */
  streamError(tokensSent: number): string;
}

export interface RouteInput {
  headers: IncomingHttpHeaders;
  /** Raw query string without '?'. */
  query: string;
  /** Model taken from the path (Gemini), if the route has one. */
  pathModel?: string;
  /** Route variant (Gemini: stream vs generate, SSE vs JSON array). */
  variant?: string;
}

export interface ProtocolHandler {
  protocol: Protocol;
  /** Stats name of the route, e.g. 'openai.chat'. */
  route: string;
  /** Prefix of reply ids: chatcmpl-, resp_, msg_ ... */
  idPrefix: string;
  /** Vendor-specific authentication check. */
  auth(input: RouteInput, requireAuth: boolean): ErrorResponse | undefined;
  parse(body: unknown, input: RouteInput): ParsedRequest | ErrorResponse;
  /** Headers every successful response carries (request ids, rate-limit state...). */
  successHeaders(ctx: ReplyContext): Record<string, string>;
  stream(ctx: ReplyContext, input: RouteInput): StreamRenderer;
  json(ctx: ReplyContext): string;
  error(kind: ErrorKind, status: number, message?: string, retryAfter?: number): ErrorResponse;
}

/** Keys that begin with this get a 401 from every protocol that checks keys. */
export const INVALID_KEY_PREFIX = 'invalid';
/** Models whose name begins with this get the vendor's 404 model-not-found. */
export const MISSING_MODEL_PREFIX = 'missing-';

let seq = 0;
const BOOT = Date.now().toString(36);

/** Unique, cheap ids: a per-process prefix and a counter (no crypto per request). */
export function newId(prefix: string): string {
  seq = (seq + 1) % 0x7fffffff;
  return `${prefix}${BOOT}${seq.toString(36).padStart(6, '0')}`;
}

export function bearer(h: IncomingHttpHeaders): string | undefined {
  const a = h.authorization;
  if (typeof a !== 'string') return undefined;
  const m = /^Bearer\s+(.+)$/i.exec(a);
  return m ? m[1]!.trim() : undefined;
}

export function textOf(content: unknown): string {
  return typeof content === 'string' ? content : '';
}

export function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}
