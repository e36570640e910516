import { Readable, Transform } from 'node:stream';
import { Type } from '@sinclair/typebox';
import { request as undiciRequest, type Dispatcher } from 'undici';
import type { FastifyInstance } from 'fastify';
import {
  problems,
  sendProblem,
  signContext,
  HttpProblem,
  otelContext,
  type Identity,
  type ReadinessReport,
} from '@vivier/service-kit';
import type { EdgeRouteConfig } from '../auth/auth.plugin';
import { endToEnd, Forwarding } from './forward';
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
const INTERNAL_HEADERS: ReadonlySet<string> = new Set([
  'x-vivier-context',
  'x-vivier-context-signature',
  'x-vivier-internal',
  'authorization',
]);
/** What a GET or HEAD says of a body: none is read or forwarded, so none may be announced to the service. */
const NO_BODY: ReadonlySet<string> = new Set([...INTERNAL_HEADERS, 'content-length']);
/** The services' own banner stays behind the gateway. */
const NOT_FROM_SERVICES: ReadonlySet<string> = new Set(['x-powered-by']);

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

  // Leave bodies unparsed: the raw stream becomes the body and flows to the service as it comes.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload));

  for (const route of ROUTES) {
    const limit = route.bodyLimit === 'upload' ? options.uploadBodyLimit : options.bodyLimit;
    const base = new URL(options.upstreams[route.upstream]);
    const target = { origin: base.origin, prefix: base.pathname.replace(/\/+$/, '') };
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
          // A declared length was checked before any handler (body-limit.ts), and the HTTP parser holds
          // the body to it. A chunked body has none: count it as it streams and stop at the limit.
          let body = request.body instanceof Readable ? request.body : null;
          if (body && request.headers['content-length'] === undefined) body = body.pipe(byteLimit(limit));
          const hasBody = request.method !== 'GET' && request.method !== 'HEAD';
          const headers = endToEnd(request.headers, hasBody ? INTERNAL_HEADERS : NO_BODY);
          headers['x-request-id'] = request.id;
          headers['x-forwarded-for'] = request.clientIp;
          Object.assign(headers, contextHeaders(request.identity, request.clientIp, request.clientUserAgent));

          const res = reply.raw;
          const traced = otelContext.active();
          const forwarding = new Forwarding(
            res,
            (_status, answered) => {
              // The answer goes out as it comes, past Fastify's send (hooks already set the edge's headers).
              reply.hijack();
              const edge = reply.getHeaders() as Record<string, string | string[]>;
              const out = { ...edge, ...endToEnd(answered, NOT_FROM_SERVICES) };
              // The service's Vary adds to the edge's (CORS varies on Origin), it does not replace it.
              if (edge.vary !== undefined && answered.vary !== undefined) out.vary = `${String(edge.vary)}, ${String(answered.vary)}`;
              // A connection whose request body was not all read cannot carry another request;
              // while draining every response closes its connection (service-kit's onSend, which this skips).
              if (!request.raw.complete || app.draining.active) out.connection = 'close';
              return out;
            },
            // Called from the service connection's events: run in this request's trace context, so its
            // logs carry this request's trace (capturing it is a lookup; binding an AsyncResource per
            // request would cost every request for the sake of the failing ones).
            (error, headSent) => otelContext.with(traced, () => {
              request.log.warn({ err: error, upstream: route.upstream, headSent }, 'upstream request failed');
              if (headSent) return;
              // The rest of an unread request body would be taken for the next request.
              if (!request.raw.complete) reply.header('connection', 'close');
              const cause = (error as { cause?: unknown }).cause;
              const code = (error as { code?: string }).code ?? '';
              const problem =
                error instanceof HttpProblem
                  ? error
                  : cause instanceof HttpProblem
                    ? cause
                    : code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT'
                      ? new HttpProblem(504, 'upstream_timeout', `The ${route.upstream} service did not answer in time.`)
                      : new HttpProblem(502, 'upstream_unavailable', `The ${route.upstream} service is unavailable.`);
              void sendProblem(request, reply as never, problem);
            }),
          );
          // A revocation ends what is running with the revoked credential (SSE replies above all).
          // Not on auth's routes: they are short, and the request that revokes (logout-all) must not end itself.
          const done =
            request.identity && route.upstream !== 'auth'
              ? app.edgeAuth.openRequests.add(request.identity, request.credentialIssuedAt, () => res.destroy())
              : undefined;
          if (res.destroyed) {
            // Gone during the edge checks: its 'close' has been and will not come again.
            done?.();
            return;
          }
          res.once('close', () => {
            // Gone before the whole answer: nobody is left to receive it, the service's work stops.
            if (!res.writableFinished) forwarding.abort();
            done?.();
          });
          agent.dispatch(
            { origin: target.origin, path: target.prefix + request.url, method: request.method as Dispatcher.HttpMethod, headers, body: hasBody ? body : null },
            forwarding,
          );
        },
      });
    }
  }

  // One look at the whole platform: each service's readiness, without the error texts of its
  // checks (they name hosts, roles and addresses; the route is public). Those are in each
  // service's own /ready, on the internal network, and in the logs.
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
    async (request, reply) => {
      const entries = await Promise.all(
        (Object.keys(options.upstreams) as UpstreamName[]).map(async (name) => {
          try {
            const res = await undiciRequest(`${options.upstreams[name]}/ready`, {
              dispatcher: agent,
              headersTimeout: 3000,
              bodyTimeout: 3000,
            });
            const body = (await res.body.json()) as ReadinessReport;
            const checks = Object.fromEntries(Object.entries(body.checks ?? {}).map(([check, c]) => [check, { status: c.status, critical: c.critical }]));
            return [name, { httpStatus: res.statusCode, status: body.status, checks }] as const;
          } catch (error) {
            request.log.warn({ err: error, service: name }, 'a service did not answer its readiness check');
            return [name, { httpStatus: 0, status: 'unavailable' }] as const;
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
