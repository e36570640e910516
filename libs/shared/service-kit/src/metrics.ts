import fp from 'fastify-plugin';
import { Registry, Histogram, collectDefaultMetrics } from 'prom-client';

declare module 'fastify' {
  interface FastifyInstance {
    /** This app's Prometheus registry; libraries add their metrics to it. */
    metrics: Registry;
  }
}

/**
 * A registry per app (not prom-client's global one), so two apps in one test process do not
 * share counters. Request durations are labelled with the route template, never the raw URL,
 * to keep cardinality bounded.
 */
export const metricsPlugin = fp<{ service: string; defaultMetrics?: boolean }>(
  async (app, { service, defaultMetrics = true }) => {
    const registry = new Registry();
    registry.setDefaultLabels({ service });
    if (defaultMetrics) collectDefaultMetrics({ register: registry });
    const duration = new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP request duration by method, route and status code.',
      labelNames: ['method', 'route', 'status_code'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    });
    app.decorate('metrics', registry);
    app.addHook('onResponse', async (request, reply) => {
      const route = request.routeOptions.url ?? 'unmatched';
      if (route === '/metrics') return;
      duration.observe(
        { method: request.method, route, status_code: String(reply.statusCode) },
        reply.elapsedTime / 1000,
      );
    });
    app.get('/metrics', { logLevel: 'warn', schema: { hide: true } }, async (_request, reply) => {
      reply.type(registry.contentType);
      return registry.metrics();
    });
  },
  { name: 'metrics' },
);
