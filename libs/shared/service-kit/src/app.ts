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
import { loggerOptions } from './logging';
import { registerProblemHandlers } from './errors';
import { metricsPlugin } from './metrics';
import { readinessPlugin } from './readiness';

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

/**
 * The Fastify instance every Vivier service starts from: TypeBox type provider, pino with the
 * request id on every line, problem-details errors, /health, /ready and /metrics.
 *
 * The request id: the gateway generates one (or keeps a well-formed `x-request-id` from the
 * client) and passes it on; services keep the id they receive, so one request has one id in the
 * logs of every service it touches.
 */
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
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 200 },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  // While draining, every response closes its connection, so keep-alive clients move to another
  // instance and the server can finish closing as soon as in-flight requests are answered.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onSend', async (_request, reply) => {
    if (closing) reply.header('connection', 'close');
  });
  registerProblemHandlers(app);
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
