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

/** Every variable the admin service reads; the type below is derived from it, never written twice. */
export const adminConfigSchema = Type.Object({
  ...baseConfigProperties,
  ...identityConfigProperties,
  ...databaseConfigProperties,
  ...redisConfigProperties,
  ...kafkaConfigProperties,
  ...messagingConfigProperties,
  PORT: Env.port(8083, 'HTTP port of the admin service.'),
});

export type AdminConfig = Static<typeof adminConfigSchema>;

export function loadAdminConfig(env: NodeJS.ProcessEnv = process.env): AdminConfig {
  return loadConfig('admin', adminConfigSchema, env);
}
