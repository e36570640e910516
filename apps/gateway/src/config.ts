import { Type, type Static } from '@sinclair/typebox';
import { Env, baseConfigProperties, identityConfigProperties, loadConfig, redisConfigProperties } from '@vivier/service-kit';

/** Every variable the gateway reads; the type below is derived from it, never written twice. */
export const gatewayConfigSchema = Type.Object({
  ...baseConfigProperties,
  ...identityConfigProperties,
  ...redisConfigProperties,
  PORT: Env.port(8080, 'Public HTTP port of the platform.'),
  AUTH_URL: Env.url(['http', 'https'], 'http://127.0.0.1:8081', 'Internal base URL of the auth service.'),
  CHAT_URL: Env.url(['http', 'https'], 'http://127.0.0.1:8082', 'Internal base URL of the chat service.'),
  ADMIN_URL: Env.url(['http', 'https'], 'http://127.0.0.1:8083', 'Internal base URL of the admin service.'),
  BODY_LIMIT_BYTES: Env.int(1_048_576, 'Largest request body accepted (bytes); larger ones get 413.', 1024),
  UPLOAD_BODY_LIMIT_BYTES: Env.int(26_214_400, 'Largest upload body accepted on /api/v1/files (bytes).', 1024),
  UPSTREAM_CONNECTIONS: Env.int(128, 'Keep-alive connections per upstream service.', 1),
  UPSTREAM_TIMEOUT_MS: Env.int(300_000, 'Longest wait for upstream headers or between body chunks.', 1000),
});

export type GatewayConfig = Static<typeof gatewayConfigSchema>;

export function loadGatewayConfig(env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  return loadConfig('gateway', gatewayConfigSchema, env);
}
