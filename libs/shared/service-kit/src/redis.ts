import fp from 'fastify-plugin';
import { Redis, type Command } from 'ioredis';
import { endSpan, SpanKind, startChildSpan, tracingEnabled } from './tracing';

/** Inside a trace, each command of this client gets a CLIENT span (the command name, never its arguments). */
export function instrumentRedis(redis: Redis): void {
  const send = redis.sendCommand.bind(redis) as (command: Command, ...rest: unknown[]) => unknown;
  (redis as unknown as { sendCommand: (command: Command, ...rest: unknown[]) => unknown }).sendCommand = (command: Command, ...rest: unknown[]) => {
    if (!tracingEnabled()) return send(command, ...rest);
    const name = command.name.toUpperCase();
    const traced = startChildSpan(name, { kind: SpanKind.CLIENT, attributes: { 'db.system.name': 'redis', 'db.operation.name': name } });
    if (traced) {
      command.promise.then(
        () => endSpan(traced.span),
        (error: unknown) => endSpan(traced.span, error),
      );
    }
    return send(command, ...rest);
  };
}

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
    instrumentRedis(redis);
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
