import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * The OpenAI-compatible API (`/v1/*`) answers errors the way OpenAI does, so SDKs and tools built
 * for it read them: `{ error: { message, type, param, code } }`, same status codes (the SDKs pick
 * their error class from the status). Everywhere else errors are RFC 9457 problem details; this
 * turns one into the other, keeping the stable `code`.
 */
export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

const TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'invalid_request_error',
  409: 'invalid_request_error',
  413: 'invalid_request_error',
  415: 'invalid_request_error',
  422: 'invalid_request_error',
  429: 'rate_limit_error',
};

/** OpenAI's codes where ours name the same thing differently. */
const CODES: Record<string, string> = {
  unknown_model: 'model_not_found',
  rate_limited: 'rate_limit_exceeded',
  quota_exceeded: 'insufficient_quota',
  invalid_token: 'invalid_api_key',
  invalid_api_key: 'invalid_api_key',
  unauthorized: 'invalid_api_key',
};

export function openAiError(status: number, code: string, message: string, param: string | null = null): OpenAiErrorBody {
  return {
    error: {
      message,
      type: TYPES[status] ?? (status >= 500 ? 'server_error' : 'invalid_request_error'),
      param,
      code: CODES[code] ?? code,
    },
  };
}

/** The OpenAI form of a problem-details JSON body; undefined when `payload` is not one. */
export function problemToOpenAi(payload: string): OpenAiErrorBody | undefined {
  let problem: { status?: unknown; code?: unknown; detail?: unknown; title?: unknown; errors?: Array<{ path?: string }> };
  try {
    problem = JSON.parse(payload) as typeof problem;
  } catch {
    return undefined;
  }
  if (typeof problem.status !== 'number' || typeof problem.code !== 'string') return undefined;
  const message = typeof problem.detail === 'string' ? problem.detail : typeof problem.title === 'string' ? problem.title : 'Request failed.';
  const param = problem.errors?.[0]?.path?.replace(/^\/?(body\/)?/, '').replaceAll('/', '.') || null;
  return openAiError(problem.status, problem.code, message, param);
}

/**
 * An `onSend` hook that rewrites problem-details answers of `/v1/*` routes into OpenAI's error
 * shape (register it where those routes are: the gateway, the chat service's OpenAI routes).
 */
export async function openAiErrorsOnSend(request: FastifyRequest, reply: FastifyReply, payload: unknown): Promise<unknown> {
  if (!request.url.startsWith('/v1/') || typeof payload !== 'string') return payload;
  const type = String(reply.getHeader('content-type') ?? '');
  if (!type.startsWith('application/problem+json')) return payload;
  const body = problemToOpenAi(payload);
  if (!body) return payload;
  reply.header('content-type', 'application/json; charset=utf-8');
  const json = JSON.stringify(body);
  reply.header('content-length', Buffer.byteLength(json));
  return json;
}
