import type { DestinationStream } from 'pino';
import { createRedis, createServiceApp, redisPlugin, type ServiceApp } from '@vivier/service-kit';
import type { GatewayConfig } from './config';
import { proxyRoutes } from './modules/proxy/proxy.routes';
import { upstreamUrls } from './modules/proxy/upstreams';

export interface BuildGatewayAppOptions {
  logStream?: DestinationStream;
}

/** The gateway as an app without a socket: main.ts listens, tests use app.inject. */
export async function buildGatewayApp(config: GatewayConfig, options: BuildGatewayAppOptions = {}): Promise<ServiceApp> {
  const app = await createServiceApp({
    service: 'gateway',
    logLevel: config.LOG_LEVEL,
    logStream: options.logStream,
    bodyLimit: config.BODY_LIMIT_BYTES,
  });
  await app.register(redisPlugin, {
    redis: createRedis(config.REDIS_URL, { keyPrefix: config.REDIS_KEY_PREFIX, name: 'gateway' }),
  });
  await app.register(proxyRoutes, {
    upstreams: upstreamUrls(config),
    bodyLimit: config.BODY_LIMIT_BYTES,
    uploadBodyLimit: config.UPLOAD_BODY_LIMIT_BYTES,
    connections: config.UPSTREAM_CONNECTIONS,
    timeoutMs: config.UPSTREAM_TIMEOUT_MS,
  });
  return app;
}
