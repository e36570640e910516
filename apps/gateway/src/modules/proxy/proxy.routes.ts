import { Readable, Transform } from 'node:stream';
import replyFrom from '@fastify/reply-from';
import { Type } from '@sinclair/typebox';
import { request as undiciRequest, type Dispatcher } from 'undici';
import type { FastifyInstance } from 'fastify';
import {
  problems,
  sendProblem,
  signContext,
  HttpProblem,
  type Identity,
  type ReadinessReport,
} from '@vivier/service-kit';
import type { EdgeRouteConfig } from '../auth/auth.plugin';
import { ROUTES, type UpstreamName } from './upstreams';

export interface ProxyOptions {
  upstreams: Record<UpstreamName, string>;
  bodyLimit: number;
  uploadBodyLimit: number;
  /** The keep-alive pools to the services (app.ts owns and closes it). */
  dispatcher: Dispatcher;
  /** Signs the context (client IP, user agent, identity) the services trust. */
  identitySecret: string;
}

/** How long a signed context stays valid: enough for a slow upload to reach the service, short enough to bound replay. */
const CONTEXT_TTL_SECONDS = 60;

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

/**
 * Headers a client may never send through the gateway: they carry trusted internal facts. The
 * credential itself stays at the edge too: services trust the signed context, never a token.
 */
const INTERNAL_HEADERS = [
  'x-vivier-context',
  'x-vivier-context-signature',
  'x-vivier-internal',
  'authorization',
];

/**
 * Carries a request's abort signal from its route handler to the pool. reply-from passes nothing
 * of the request to the dispatcher but the headers object, which it copies with Object.assign:
 * symbol keys come along, and never reach the wire.
 */
const UPSTREAM_SIGNAL = Symbol('vivier.upstream-signal');

/**
 * The keep-alive pools as reply-from calls them, with each request's abort signal attached: a
 * client that goes away before the service has answered (a non-streamed completion, a reply
 * before its first event) ends the request to the service, which stops its provider call.
 * Once the answer streams, its body is destroyed with the client connection anyway.
 */
function abortablePool(agent: Dispatcher): Pick<Dispatcher, 'request'> {
  return {
    request: ((opts: Dispatcher.RequestOptions, callback: (err: Error | null, data: Dispatcher.ResponseData) => void) => {
      const headers = opts.headers as Record<string | symbol, unknown>;
      const signal = headers[UPSTREAM_SIGNAL] as AbortSignal | undefined;
      if (signal) {
        delete headers[UPSTREAM_SIGNAL];
        opts.signal = signal;
      }
      return agent.request(opts, callback);
    }) as Dispatcher['request'],
  };
}

/**
 * Forwards public routes to the owning service over keep-alive pools. Bodies stream both ways:
 * the request body is never parsed here and the response (SSE included) is piped as it arrives.
 */
export async function proxyRoutes(app: FastifyInstance, options: ProxyOptions): Promise<void> {
  const agent = options.dispatcher;

  // The same caller from the same address within the same second gets the same signed context:
  // remembered per identity object (one per verified token or API key answer), signed once a second.
  const signedFor = new WeakMap<
    Identity,
    { ip: string; userAgent: string | undefined; second: number; headers: Record<string, string> }
  >();
  function contextHeaders(
    identity: Identity | undefined,
    ip: string,
    userAgent: string | undefined,
  ): Record<string, string> {
    const second = Math.floor(Date.now() / 1000);
    const sign = () =>
      signContext({ ip, userAgent, identity, exp: second + CONTEXT_TTL_SECONDS }, options.identitySecret);
    if (!identity) return sign();
    const last = signedFor.get(identity);
    if (last && last.second === second && last.ip === ip && last.userAgent === userAgent) return last.headers;
    const headers = sign();
    signedFor.set(identity, { ip, userAgent, second, headers });
    return headers;
  }
  await app.register(replyFrom, {
    undici: abortablePool(agent) as never,
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
    const config: EdgeRouteConfig = { access: route.access };
    for (const url of route.patterns) {
      app.route({
        method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
        url,
        // A declared length over this is refused before anything reaches a service (body-limit.ts).
        bodyLimit: limit,
        config,
        // The services describe these paths in their own OpenAPI documents (merged at /docs/json).
        schema: { hide: true },
        handler: (request, reply) => {
          // A chunked body has no declared length: count it as it streams and stop at the limit.
          if (request.body instanceof Readable) request.body = request.body.pipe(byteLimit(limit));
          // A revocation ends what is running with the revoked credential (SSE replies above all).
          // Not on auth's routes: they are short, and the request that revokes (logout-all) must not end itself.
          const done =
            request.identity && route.upstream !== 'auth'
              ? app.edgeAuth.openRequests.add(request.identity, request.credentialIssuedAt, () => reply.raw.destroy())
              : undefined;
          const upstream = new AbortController();
          if (reply.raw.destroyed) {
            // Gone during the edge checks: its 'close' has been and will not come again.
            upstream.abort();
            done?.();
          } else {
            reply.raw.once('close', () => {
              // The client went before the answer began: nobody is left to receive it.
              if (!reply.raw.headersSent) upstream.abort();
              done?.();
            });
          }
          return reply.from(base + request.url, {
            rewriteRequestHeaders: (_req, headers) => {
              const forwarded: Record<string | symbol, unknown> = {
                ...headers,
                'x-request-id': request.id,
                [UPSTREAM_SIGNAL]: upstream.signal,
              };
              for (const name of INTERNAL_HEADERS) delete forwarded[name];
              forwarded['x-forwarded-for'] = request.clientIp;
              return Object.assign(
                forwarded,
                contextHeaders(request.identity, request.clientIp, request.clientUserAgent),
              );
            },
            rewriteHeaders: (headers) => {
              delete headers['x-powered-by'];
              return headers;
            },
            onError: (reply, { error }) => {
              if (upstream.signal.aborted) return; // the client has gone: nothing to answer, nothing went wrong
              const code = (error as { code?: string }).code ?? '';
              const cause = (error as { cause?: unknown }).cause;
              const problem =
                error instanceof HttpProblem
                  ? error
                  : cause instanceof HttpProblem
                    ? cause
                    : code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT'
                      ? new HttpProblem(
                          504,
                          'upstream_timeout',
                          `The ${route.upstream} service did not answer in time.`,
                        )
                      : new HttpProblem(
                          502,
                          'upstream_unavailable',
                          `The ${route.upstream} service is unavailable.`,
                        );
              request.log.warn({ err: error, upstream: route.upstream }, 'upstream request failed');
              void sendProblem(request, reply as never, problem);
            },
          });
        },
      });
    }
  }

  // One look at the whole platform: each service's own readiness report.
  const healthConfig: EdgeRouteConfig = { access: 'public' };
  app.get(
    '/api/v1/health',
    {
      logLevel: 'warn',
      config: healthConfig,
      schema: {
        summary: 'Readiness of every service behind the gateway',
        tags: ['platform'],
        security: [],
        response: {
          200: HealthReport,
          503: HealthReport,
        },
      },
    },
    async (_request, reply) => {
      const entries = await Promise.all(
        (Object.keys(options.upstreams) as UpstreamName[]).map(async (name) => {
          try {
            const res = await undiciRequest(`${options.upstreams[name]}/ready`, {
              dispatcher: agent,
              headersTimeout: 3000,
              bodyTimeout: 3000,
            });
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
    },
  );
}

const HealthReport = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('unavailable')]),
  services: Type.Record(
    Type.String(),
    Type.Object(
      {
        httpStatus: Type.Integer({
          description: "Status of the service's GET /ready; 0 when it did not answer.",
        }),
        status: Type.String(),
      },
      { additionalProperties: true },
    ),
  ),
});
