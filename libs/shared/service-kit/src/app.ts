import { randomUUID } from 'node:crypto';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type RawReplyDefaultExpression,
  type RawRequestDefaultExpression,
  type RawServerDefault,
} from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { DestinationStream } from 'pino';
import pino from 'pino';
import swagger from '@fastify/swagger';
import { AjvCompiler } from '@fastify/ajv-compiler';
import { loggerOptions } from './logging';
import { HttpProblem, registerProblemHandlers } from './errors';
import { metricsPlugin } from './metrics';
import { readinessPlugin } from './readiness';
import { ShutdownSteps } from './shutdown-steps';
import { traceHttpServer } from './tracing';

declare module 'fastify' {
  interface FastifyInstance {
    /** Set when the service begins to stop: responses close their connections, /ready says 503. */
    draining: { active: boolean };
  }
}

export type ServiceApp = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

export interface CreateAppOptions {
  service: string;
  logLevel?: string;
  /** Where log lines go (tests capture them); stdout by default. */
  logStream?: DestinationStream;
  bodyLimit?: number;
  /** Fastify's trustProxy: which peers may set X-Forwarded-For. */
  trustProxy?: boolean | string | string[];
  defaultMetrics?: boolean;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** `\u0000` in JSON text, not preceded by an escaped backslash (`\\u0000` is a backslash and "u0000"). */
const ESCAPED_NUL = /(?:^|[^\\])(?:\\\\)*\\u0000/;
/** A surrogate written as an escape: the only way a lone one gets into JSON text that is UTF-8. */
const ESCAPED_SURROGATE = /\\u[dD][89a-fA-F]/;
/** `%00` in a URL: a NUL in a query value or a path parameter. */
const URL_NUL = /%00/;

/** A high surrogate without its low half, or a low one without its high half. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Whether every string in a parsed JSON value (keys too) is well-formed UTF-16. */
function wellFormed(value: unknown): boolean {
  if (typeof value === 'string') return !LONE_SURROGATE.test(value);
  if (Array.isArray(value)) return value.every(wellFormed);
  if (value !== null && typeof value === 'object') {
    for (const [key, inner] of Object.entries(value)) if (LONE_SURROGATE.test(key) || !wellFormed(inner)) return false;
  }
  return true;
}

/**
 * The Fastify instance every Vivier service starts from: TypeBox type provider, pino with the
 * request id on every line, problem-details errors, /health, /ready and /metrics.
 *
 * The request id: the gateway generates one (or keeps a well-formed `x-request-id` from the
 * client) and passes it on; services keep the id they receive, so one request has one id in the
 * logs of every service it touches.
 */
// `unicode: false`: string lengths count UTF-16 units, as JavaScript's `length` and the event
// contracts (TypeBox) do. Counted in code points, a field of emoji passed the route's maxLength
// and then failed its event's, a 500 instead of a 400. Ajv 8 still honours the option but calls
// it deprecated on every instance it creates; that one warning is dropped, any other goes on.
const UNICODE_DEPRECATION = 'DEPRECATED: option unicode.';
const AJV_LOGGER = {
  log: (...args: unknown[]) => console.log(...args),
  warn: (...args: unknown[]) => {
    if (!(typeof args[0] === 'string' && args[0].startsWith(UNICODE_DEPRECATION))) console.warn(...args);
  },
  error: (...args: unknown[]) => console.error(...args),
};
const AJV_OPTIONS = { removeAdditional: false, useDefaults: true, allErrors: false, unicode: false, logger: AJV_LOGGER } as const;

export async function createServiceApp(options: CreateAppOptions): Promise<ServiceApp> {
  const logger = pino(loggerOptions(options.service, options.logLevel ?? 'info'), options.logStream);
  const app = Fastify<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger>({
    loggerInstance: logger,
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    trustProxy: options.trustProxy ?? false,
    requestIdHeader: false,
    logController: new LogController({ requestIdLogLabel: 'requestId', disableRequestLogging: false }),
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    // While draining, a request that still arrives on an open keep-alive connection is served
    // (its response closes the connection), not refused: the client sent it before it could know,
    // and a 503 for it would be a failed request in a rolling restart. /ready answers 503 then, so
    // load balancers stop sending; new connections are refused once the server stops listening.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 200 },
  }).withTypeProvider<TypeBoxTypeProvider>();
  // Query strings, path parameters and headers are text: their values are coerced to the schema's
  // types (`?limit=20` is the integer 20). JSON bodies already carry types and are taken as sent:
  // `{"title": 123}` is a 400, not the title "123", and `null` never becomes "" or 0.
  const coercing = AjvCompiler()({}, { customOptions: { ...AJV_OPTIONS, coerceTypes: 'array' } });
  const exact = AjvCompiler()({}, { customOptions: { ...AJV_OPTIONS, coerceTypes: false } });
  app.setValidatorCompiler((route) => (route.httpPart === 'body' ? exact : coercing)(route));

  traceHttpServer(app, options.service);
  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    // A NUL in the URL (a query value, a path parameter) is text PostgreSQL cannot store.
    if (URL_NUL.test(request.url)) throw new HttpProblem(400, 'invalid_text', 'Text may not contain NUL characters (%00).');
  });
  // While draining (from SIGTERM, see runService, or from close()), every response closes its
  // connection, so keep-alive clients move to another instance and the server can finish closing
  // as soon as in-flight requests are answered; /ready answers 503.
  const draining = { active: false };
  app.decorate('draining', draining);
  app.decorate('shutdownSteps', new ShutdownSteps());
  app.addHook('preClose', async () => {
    draining.active = true;
  });
  app.addHook('onSend', async (_request, reply) => {
    if (draining.active) reply.header('connection', 'close');
  });
  registerProblemHandlers(app);
  // JSON as Fastify parses it (prototype poisoning refused), except text PostgreSQL cannot store:
  // a NUL or half of a surrogate pair (JSON can only write them escaped) is a 400 here, not a
  // failed insert later (a NUL in the URL: the first onRequest hook above).
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = body as string;
    if (ESCAPED_NUL.test(text)) {
      done(new HttpProblem(400, 'invalid_text', 'Text may not contain NUL characters (\\u0000).'), undefined);
      return;
    }
    if (!ESCAPED_SURROGATE.test(text)) {
      parseJson(request, text, done);
      return;
    }
    parseJson(request, text, (error, value) => {
      if (error) done(error, undefined);
      else if (!wellFormed(value)) done(new HttpProblem(400, 'invalid_text', 'Text may not contain half of a surrogate pair (a lone \\ud800-\\udfff escape).'), undefined);
      else done(null, value);
    });
  });
  // Route schemas become this service's OpenAPI document; the gateway merges all of them at /docs.
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: `Vivier ${options.service}`, version: '1.0.0' },
      components: {
        securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'Access token (JWT) or API key (vk_…)' } },
      },
    },
  });
  app.get('/openapi.json', { logLevel: 'warn', schema: { hide: true } }, async () => app.swagger());
  await app.register(metricsPlugin, { service: options.service, defaultMetrics: options.defaultMetrics ?? true });
  await app.register(readinessPlugin);
  return app as unknown as ServiceApp;
}
