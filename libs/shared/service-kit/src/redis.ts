import fp from 'fastify-plugin';
import { Redis, type Command, type RedisOptions } from 'ioredis';
import { endSpan, SpanKind, startChildSpan, tracingEnabled } from './tracing';
import { closeStep } from './shutdown-steps';

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
  const redis = new Redis(url, {
    keyPrefix: options.keyPrefix,
    connectionName: options.name,
    // Fail fast while Redis is away instead of queueing commands forever; callers apply their
    // documented fallback (rate limits, cache, fan-out).
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    // A command whose reply was lost when the connection broke may have run: sent again after the
    // reconnect, a rate-limit script or a lease grant would count twice. It fails instead, like
    // any command while Redis is away (see rejectUnanswered).
    autoResendUnfulfilledCommands: false,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(times * 200, 2000),
    lazyConnect: false,
  });
  redis.on('close', () => rejectUnanswered(redis));
  return redis;
}

/**
 * Options for a subscribing connection made with `duplicate()` of a client from createRedis: it
 * waits for Redis rather than failing, and what it sends (SUBSCRIBE, UNSUBSCRIBE) is safe to send
 * again after a reconnect.
 */
export function subscriberOptions(name: string): RedisOptions {
  return { enableOfflineQueue: true, maxRetriesPerRequest: null, autoResendUnfulfilledCommands: true, connectionName: name };
}

/**
 * The commands that were sent and not answered when the connection closed. Without
 * `autoResendUnfulfilledCommands`, ioredis 5 keeps them aside and drops them at the next ready
 * without settling their promises (redis/ioredis#2193, fixed in 6.1 by rejecting them at that
 * ready): the caller would wait for as long as Redis stays away, and for good after that. They are
 * rejected here as soon as the connection closes.
 */
function rejectUnanswered(redis: Redis): void {
  const stash = (redis as unknown as { prevCommandQueue?: { length: number; shift(): { command: Command } | undefined } | null }).prevCommandQueue;
  while (stash && stash.length > 0) stash.shift()!.command.reject(new Error('Connection to Redis closed before the reply came; the command may have run.'));
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
    closeStep(app, 'redis', async () => redis.disconnect());
  },
  { name: 'redis', dependencies: ['readiness'] },
);

/**
 * One pub/sub channel on a connection of its own (a subscribing connection can do nothing else).
 * SUBSCRIBE is sent once the connection is ready (sent during ioredis' ready check it makes the
 * connection drop) and again on every later ready until one succeeds; after that ioredis renews it
 * after reconnects. Channels are not prefixed by ioredis: `channel` carries REDIS_KEY_PREFIX.
 * `onReconnect`: the connection is ready again after a break, whose messages were missed.
 * `onLive`: whether every message published from now on reaches `onMessage` — false as soon as the
 * connection closes, true once a SUBSCRIBE sent on the ready connection is acknowledged (after
 * ioredis' own renewal, which it sends first).
 */
export function subscribeChannel(
  redis: Redis,
  options: {
    channel: string;
    name: string;
    log: { debug: (obj: object, msg: string) => void; warn: (obj: object, msg: string) => void };
    onMessage: (message: string) => void;
    onReconnect?: () => void;
    onLive?: (live: boolean) => void;
  },
): { close: () => void } {
  const subscriber = redis.duplicate(subscriberOptions(options.name));
  subscriber.on('error', (error: Error) => options.log.debug({ err: error, channel: options.channel }, 'redis subscriber error'));
  subscriber.on('message', (_channel: string, message: string) => options.onMessage(message));
  let subscribed = false;
  let connectedBefore = false;
  // Connections so far: an acknowledgement of an earlier one says nothing about this one.
  let connection = 0;
  subscriber.on('close', () => {
    connection += 1;
    options.onLive?.(false);
  });
  const ready = () => {
    if (connectedBefore) options.onReconnect?.();
    connectedBefore = true;
    if (subscribed && !options.onLive) return;
    subscribed = true;
    const current = connection;
    subscriber.subscribe(options.channel).then(
      () => {
        if (current === connection) options.onLive?.(true);
      },
      (error: unknown) => {
        subscribed = false;
        options.log.warn({ err: error, channel: options.channel }, 'cannot subscribe to a Redis channel');
      },
    );
  };
  subscriber.on('ready', ready);
  if (subscriber.status === 'ready') ready();
  return { close: () => subscriber.disconnect() };
}
