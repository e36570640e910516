import { Readable, Transform } from 'node:stream';
import replyFrom from '@fastify/reply-from';
import { Agent, request as undiciRequest } from 'undici';
import type { FastifyInstance } from 'fastify';
import { problems, sendProblem, HttpProblem, type ReadinessReport } from '@vivier/service-kit';
import { ROUTES, type UpstreamName } from './upstreams';

export interface ProxyOptions {
  upstreams: Record<UpstreamName, string>;
  bodyLimit: number;
  uploadBodyLimit: number;
  connections: number;
  timeoutMs: number;
}

function byteLimit(limit: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      if (seen > limit) callback(problems.tooLarge(`The request body exceeds ${limit} bytes.`));
      else callback(null, chunk);
    },
  });
}

/** Headers a client may never send through the gateway: they carry trusted internal facts. */
const INTERNAL_HEADERS = ['x-vivier-context', 'x-vivier-context-signature', 'x-vivier-internal'];

/**
 * Forwards public routes to the owning service over keep-alive pools. Bodies stream both ways:
 * the request body is never parsed here and the response (SSE included) is piped as it arrives.
 */
export async function proxyRoutes(app: FastifyInstance, options: ProxyOptions): Promise<void> {
  const agent = new Agent({
    connections: options.connections,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    headersTimeout: options.timeoutMs,
    bodyTimeout: options.timeoutMs,
  });
  app.addHook('onClose', async () => agent.close());

  await app.register(replyFrom, {
    undici: agent,
    // Retrying a non-idempotent chat message would send it twice; services are reached once.
    retryMethods: [],
    disableRequestLogging: true,
  });

  // Leave bodies unparsed: the raw stream becomes the body and flows to the service as it comes.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload));

  for (const route of ROUTES) {
    const limit = route.bodyLimit === 'upload' ? options.uploadBodyLimit : options.bodyLimit;
    const base = options.upstreams[route.upstream];
    for (const url of route.patterns) {
      app.route({
        method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
        url,
        onRequest: async (request) => {
          // A declared length over the limit is refused before anything reaches a service.
          const length = Number(request.headers['content-length'] ?? 0);
          if (length > limit) throw problems.tooLarge(`The request body exceeds ${limit} bytes.`);
        },
        handler: (request, reply) => {
          // A chunked body has no declared length: count it as it streams and stop at the limit.
          if (request.body instanceof Readable) request.body = request.body.pipe(byteLimit(limit));
          return reply.from(base + request.url, {
            rewriteRequestHeaders: (_req, headers) => {
              const forwarded: Record<string, string | string[] | undefined> = { ...headers, 'x-request-id': request.id };
              for (const name of INTERNAL_HEADERS) delete forwarded[name];
              forwarded['x-forwarded-for'] = request.ip;
              return forwarded;
            },
            onError: (reply, { error }) => {
              const code = (error as { code?: string }).code ?? '';
              const cause = (error as { cause?: unknown }).cause;
              const problem =
                error instanceof HttpProblem
                  ? error
                  : cause instanceof HttpProblem
                    ? cause
                    : code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT'
                  ? new HttpProblem(504, 'upstream_timeout', `The ${route.upstream} service did not answer in time.`)
                  : new HttpProblem(502, 'upstream_unavailable', `The ${route.upstream} service is unavailable.`);
              request.log.warn({ err: error, upstream: route.upstream }, 'upstream request failed');
              void sendProblem(request, reply as never, problem);
            },
          });
        },
      });
    }
  }

  // One look at the whole platform: each service's own readiness report.
  app.get('/api/v1/health', { logLevel: 'warn' }, async (_request, reply) => {
    const entries = await Promise.all(
      (Object.keys(options.upstreams) as UpstreamName[]).map(async (name) => {
        try {
          const res = await undiciRequest(`${options.upstreams[name]}/ready`, { dispatcher: agent, headersTimeout: 3000, bodyTimeout: 3000 });
          const body = (await res.body.json()) as ReadinessReport;
          return [name, { httpStatus: res.statusCode, ...body }] as const;
        } catch (error) {
          return [name, { httpStatus: 0, status: 'unavailable', error: (error as Error).message }] as const;
        }
      }),
    );
    const services = Object.fromEntries(entries);
    const ok = entries.every(([, s]) => s.httpStatus === 200);
    return reply.code(ok ? 200 : 503).send({ status: ok ? 'ready' : 'unavailable', services });
  });
}
