import swaggerUi from '@fastify/swagger-ui';
import type { Dispatcher } from 'undici';
import type { FastifyInstance } from 'fastify';
import type { EdgeRouteConfig } from '../auth/auth.plugin';
import type { UpstreamName } from '../proxy/upstreams';
import { OpenApiMerger, type OpenApiDocument } from './openapi-merge.service';

export interface DocsOptions {
  upstreams: Record<UpstreamName, string>;
  dispatcher: Dispatcher;
  ttlSeconds: number;
}

/**
 * `GET /docs/json` (and /docs/yaml): the merged OpenAPI document of every service; `GET /docs`:
 * Swagger UI on it. Swagger UI's routes ask for the document synchronously, so an onRequest hook
 * makes sure a fresh one is built before they run.
 */
export async function docsRoutes(app: FastifyInstance, options: DocsOptions): Promise<void> {
  const merger = new OpenApiMerger({
    upstreams: options.upstreams,
    dispatcher: options.dispatcher,
    ttlMs: options.ttlSeconds * 1000,
    own: () => app.swagger() as OpenApiDocument,
    log: app.log,
  });

  // Public, and rate limited per IP like any anonymous call (the document costs three fetches).
  const config: EdgeRouteConfig = { access: 'public' };
  app.addHook('onRoute', (route) => {
    route.config = { ...(route.config as object), ...config };
  });

  await app.register(swaggerUi, {
    routePrefix: '/docs',
    uiConfig: { validatorUrl: null, persistAuthorization: false },
    staticCSP: false,
    transformSpecificationClone: false,
    transformSpecification: () => merger.current ?? {},
    uiHooks: {
      onRequest: async (request) => {
        const path = request.url.split('?')[0]!;
        if (path === '/docs/json' || path === '/docs/yaml') await merger.refresh();
      },
    },
  });
}
