import { Type, type Static } from '@sinclair/typebox';
import {
  Env,
  baseConfigProperties,
  identityConfigProperties,
  databaseConfigProperties,
  kafkaConfigProperties,
  loadConfig,
  redisConfigProperties,
} from '@vivier/service-kit';
import { messagingConfigProperties } from '@vivier/messaging';

/** Every variable the auth service reads; the type below is derived from it, never written twice. */
export const authConfigSchema = Type.Object({
  ...baseConfigProperties,
  ...identityConfigProperties,
  ...databaseConfigProperties,
  ...redisConfigProperties,
  ...kafkaConfigProperties,
  ...messagingConfigProperties,
  PORT: Env.port(8081, 'HTTP port of the auth service.'),
});

export type AuthConfig = Static<typeof authConfigSchema>;

export function loadAuthConfig(env: NodeJS.ProcessEnv = process.env): AuthConfig {
  return loadConfig('auth', authConfigSchema, env);
}
