import { problems } from '@vivier/service-kit';
import { unscoped } from './unscoped';

/**
 * 413 before any handler, on every route (the gateway's own and the proxied ones): a declared
 * Content-Length over the route's body limit is refused as soon as the headers arrive. Bodies
 * without a declared length are counted as they stream (Fastify's parser on the gateway's own
 * routes, a counting stream on proxied ones).
 */
export const bodyLimitPlugin = unscoped('body-limit', async (app) => {
  app.addHook('onRequest', async (request) => {
    const declared = request.headers['content-length'];
    if (declared === undefined) return;
    const limit = request.routeOptions.bodyLimit ?? app.initialConfig.bodyLimit ?? 1_048_576;
    if (Number(declared) > limit) throw problems.tooLarge(`The request body exceeds ${limit} bytes.`);
  });
});
