import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/** RFC 9457 problem details, as every Vivier service answers errors. */
export interface ProblemDetails {
  type: string;
  title: string;
  status: number;
  code: string;
  detail?: string;
  requestId?: string;
  instance?: string;
  errors?: Array<{ path: string; message: string }>;
  [extension: string]: unknown;
}

export const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8';
const TYPE_BASE = 'https://vivier.dev/problems/';

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  408: 'Request Timeout',
  409: 'Conflict',
  411: 'Length Required',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/** An error that is meant for the client: its status, stable code and detail are sent as they are. */
export class HttpProblem extends Error {
  readonly status: number;
  readonly code: string;
  readonly detail: string | undefined;
  readonly headers: Record<string, string>;
  readonly extensions: Record<string, unknown>;

  constructor(
    status: number,
    code: string,
    detail?: string,
    options: { headers?: Record<string, string>; extensions?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(detail ?? code, { cause: options.cause });
    this.name = 'HttpProblem';
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.headers = options.headers ?? {};
    this.extensions = options.extensions ?? {};
  }
}

export const problems = {
  badRequest: (code: string, detail?: string) => new HttpProblem(400, code, detail),
  validation: (detail: string, errors: Array<{ path: string; message: string }> = []) =>
    new HttpProblem(400, 'validation_failed', detail, { extensions: { errors } }),
  unauthorized: (code = 'unauthorized', detail = 'Authentication is required.') => new HttpProblem(401, code, detail),
  forbidden: (detail = 'You are not allowed to do this.') => new HttpProblem(403, 'forbidden', detail),
  notFound: (detail = 'Not found.') => new HttpProblem(404, 'not_found', detail),
  conflict: (code: string, detail?: string) => new HttpProblem(409, code, detail),
  tooLarge: (detail = 'The request body is too large.') => new HttpProblem(413, 'payload_too_large', detail),
  unsupportedMediaType: (detail = 'Unsupported content type.') => new HttpProblem(415, 'unsupported_media_type', detail),
  rateLimited: (retryAfterSeconds: number, code = 'rate_limited', detail = 'Too many requests; retry later.') =>
    new HttpProblem(429, code, detail, { headers: { 'retry-after': String(Math.max(1, Math.ceil(retryAfterSeconds))) } }),
  unavailable: (code = 'service_unavailable', detail = 'The service is temporarily unavailable.') =>
    new HttpProblem(503, code, detail),
};

export function problemBody(
  status: number,
  code: string,
  detail: string | undefined,
  requestId: string | undefined,
  extensions: Record<string, unknown> = {},
): ProblemDetails {
  return {
    type: TYPE_BASE + code.replace(/_/g, '-'),
    title: TITLES[status] ?? (status >= 500 ? 'Server Error' : 'Client Error'),
    status,
    code,
    ...(detail === undefined ? {} : { detail }),
    ...(requestId === undefined ? {} : { requestId }),
    ...extensions,
  };
}

// Fastify's own error codes mapped to stable Vivier codes.
const FASTIFY_CODES: Record<string, { status: number; code: string; detail?: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: 'payload_too_large', detail: 'The request body is too large.' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, code: 'unsupported_media_type' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: 'malformed_body', detail: 'Content-Length does not match the body.' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: 'malformed_body', detail: 'The JSON body is empty.' },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: 'malformed_body', detail: 'The body is not valid JSON.' },
  FST_ERR_CTP_INVALID_TYPE: { status: 415, code: 'unsupported_media_type' },
  FST_ERR_NOT_FOUND: { status: 404, code: 'not_found' },
  FST_ERR_BAD_URL: { status: 400, code: 'bad_url', detail: 'The URL is malformed.' },
  FST_ERR_ASYNC_CONSTRAINT: { status: 500, code: 'internal_error' },
};

function validationErrors(error: FastifyError): Array<{ path: string; message: string }> {
  const context = error.validationContext ?? 'body';
  return (error.validation ?? []).map((v) => {
    const missing = (v.params as { missingProperty?: string } | undefined)?.missingProperty;
    const extra = (v.params as { additionalProperty?: string } | undefined)?.additionalProperty;
    const path = `${context}${v.instancePath ?? ''}${missing ? `/${missing}` : ''}${extra ? `/${extra}` : ''}`;
    return { path, message: v.message ?? 'is invalid' };
  });
}

/** Sends any error as problem details. 5xx details are logged, never sent. */
export function sendProblem(request: FastifyRequest, reply: FastifyReply, error: unknown): FastifyReply {
  let status = 500;
  let code = 'internal_error';
  let detail: string | undefined = 'An unexpected error occurred.';
  let extensions: Record<string, unknown> = {};
  let headers: Record<string, string> = {};

  if (error instanceof HttpProblem) {
    ({ status, code, detail, headers, extensions } = error);
  } else if (isFastifyError(error) && error.validation) {
    status = 400;
    code = 'validation_failed';
    const errors = validationErrors(error);
    detail = errors.map((e) => `${e.path} ${e.message}`).join('; ') || 'The request is invalid.';
    extensions = { errors };
  } else if (isFastifyError(error) && error.code && FASTIFY_CODES[error.code]) {
    const mapped = FASTIFY_CODES[error.code]!;
    status = mapped.status;
    code = mapped.code;
    detail = mapped.detail ?? error.message;
  } else if (isFastifyError(error) && error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
    status = error.statusCode;
    code = (TITLES[status] ?? 'client_error').toLowerCase().replace(/[^a-z]+/g, '_');
    detail = error.message;
  }

  if (status >= 500) request.log.error({ err: error }, 'request failed');
  else request.log.info({ code, status }, 'request rejected');

  if (reply.sent || reply.raw.headersSent) {
    // A stream already started: nothing sane can be sent any more.
    reply.raw.destroy();
    return reply;
  }
  return reply
    .code(status)
    .headers(headers)
    .type(PROBLEM_CONTENT_TYPE)
    .send(problemBody(status, code, detail, request.id, extensions));
}

function isFastifyError(error: unknown): error is FastifyError {
  return typeof error === 'object' && error !== null && ('code' in error || 'validation' in error || 'statusCode' in error);
}

export function registerProblemHandlers(app: FastifyInstance): void {
  app.setErrorHandler((error, request, reply) => sendProblem(request, reply, error));
  app.setNotFoundHandler((request, reply) =>
    sendProblem(request, reply, problems.notFound(`No route for ${request.method} ${request.url.split('?')[0]}.`)),
  );
}
