import fp from 'fastify-plugin';
import { Redis } from 'ioredis';

export function createRedis(url: string, options: { keyPrefix?: string; name: string }): Redis {
  return new Redis(url, {
    keyPrefix: options.keyPrefix,
    connectionName: options.name,
    // Fail fast while Redis is away instead of queueing commands forever; callers apply their
    // documented fallback (rate limits, cache, fan-out).
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(times * 200, 2000),
    lazyConnect: false,
  });
}

declare module 'fastify' {
  interface FastifyInstance {
    redis: Redis;
  }
}

export const redisPlugin = fp<{ redis: Redis; critical?: boolean }>(
  async (app, { redis, critical = false }) => {
    redis.on('error', (error: Error) => app.log.debug({ err: error }, 'redis error'));
    app.decorate('redis', redis);
    app.readiness.add({
      name: 'redis',
      critical,
      check: async () => {
        await redis.ping();
      },
    });
    app.addHook('onClose', async () => {
      redis.disconnect();
    });
  },
  { name: 'redis', dependencies: ['readiness'] },
);
