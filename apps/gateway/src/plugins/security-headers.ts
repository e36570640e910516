import Fastify from 'fastify';
import helmet, { type FastifyHelmetOptions } from '@fastify/helmet';
import { unscoped } from './unscoped';

const NONE = ["'none'"];

/** Every API response: nothing may load, frame, or be submitted from it. */
const API_CSP = {
  defaultSrc: NONE,
  baseUri: NONE,
  objectSrc: NONE,
  frameAncestors: NONE,
  formAction: NONE,
};

/** Swagger UI at /docs: its own scripts, styles and images, calls to this origin only. */
const DOCS_CSP = {
  ...API_CSP,
  scriptSrc: ["'self'"],
  styleSrc: ["'self'"],
  imgSrc: ["'self'", 'data:'],
  fontSrc: ["'self'", 'data:'],
  connectSrc: ["'self'"],
};

const ONE_YEAR = 31_536_000;

/** Response headers that are not security headers (the scratch app's own). */
const NOT_SECURITY = new Set(['content-type', 'content-length', 'date', 'connection', 'keep-alive']);

/**
 * The headers @fastify/helmet sends for `options`, computed once. @fastify/helmet builds its
 * middleware again on every request (about 20 µs here); the headers never change per request,
 * so the gateway asks it once at start-up and then only copies a frozen record.
 */
async function helmetHeaders(options: FastifyHelmetOptions): Promise<Readonly<Record<string, string>>> {
  const scratch = Fastify({ logger: false });
  await scratch.register(helmet, options);
  scratch.get('/', async () => '');
  const res = await scratch.inject({ method: 'GET', url: '/' });
  await scratch.close();
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(res.headers)) {
    if (!NOT_SECURITY.has(name) && typeof value === 'string') headers[name] = value;
  }
  return Object.freeze(headers);
}

/**
 * Security headers on every response the gateway sends, its own and the services' alike:
 * a CSP that allows nothing for the API (a relaxed one scoped to Swagger UI under /docs),
 * nosniff, no referrer, frame denial, and HSTS (one year, subdomains) only when the request
 * came over TLS — directly or, from a trusted proxy, with X-Forwarded-Proto: https.
 */
export const securityHeadersPlugin = unscoped('security-headers', async (app) => {
  const base = (directives: Record<string, string[]>, tls: boolean): FastifyHelmetOptions => ({
    contentSecurityPolicy: { useDefaults: false, directives },
    strictTransportSecurity: tls ? { maxAge: ONE_YEAR, includeSubDomains: true } : false,
  });
  const sets = {
    api: await helmetHeaders(base(API_CSP, false)),
    apiTls: await helmetHeaders(base(API_CSP, true)),
    docs: await helmetHeaders(base(DOCS_CSP, false)),
    docsTls: await helmetHeaders(base(DOCS_CSP, true)),
  };
  app.addHook('onRequest', async (request, reply) => {
    const docs = request.url.startsWith('/docs');
    const tls = request.protocol === 'https';
    reply.headers(docs ? (tls ? sets.docsTls : sets.docs) : tls ? sets.apiTls : sets.api);
  });
});
