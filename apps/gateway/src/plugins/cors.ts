import cors from '@fastify/cors';
import { splitList } from '@vivier/service-kit';
import { unscoped } from './unscoped';

/**
 * CORS from the CORS_ORIGINS allowlist only: an allowed origin is echoed back, any other gets no
 * Access-Control-Allow-Origin (the browser then refuses the response). Preflights are answered
 * here, before credentials are checked, and never reach a service. Credentials mode stays off:
 * the API authenticates with bearer tokens, never cookies.
 */
export const corsPlugin = unscoped<{ origins: string }>('gateway-cors', async (app, { origins }) => {
  await app.register(cors, {
    origin: splitList(origins),
    methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
    credentials: false,
    exposedHeaders: [
      'x-request-id',
      'retry-after',
      'ratelimit',
      'ratelimit-policy',
      'www-authenticate',
      'content-disposition',
    ],
    maxAge: 600,
    // Every OPTIONS request is answered at the edge; services never see one.
    strictPreflight: false,
  });
});
