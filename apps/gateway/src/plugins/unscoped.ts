import type { FastifyPluginAsync, FastifyPluginOptions } from 'fastify';

/**
 * Marks a plugin as not encapsulated, so its hooks and decorators apply to the whole app — what
 * `fastify-plugin` does, through Fastify's documented `skip-override` symbol, without adding that
 * package to the gateway's dependencies. The plugins of the edge are registered explicitly and
 * in order in app.ts.
 */
export function unscoped<Options extends FastifyPluginOptions>(
  name: string,
  plugin: FastifyPluginAsync<Options>,
): FastifyPluginAsync<Options> {
  Object.assign(plugin, { [Symbol.for('skip-override')]: true, [Symbol.for('fastify.display-name')]: name });
  return plugin;
}
