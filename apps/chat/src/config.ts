import { Type, type Static } from '@sinclair/typebox';
import {
  Env,
  baseConfigProperties,
  identityConfigProperties,
  databaseConfigProperties,
  kafkaConfigProperties,
  loadConfig,
  redisConfigProperties,
  s3ConfigProperties,
} from '@vivier/service-kit';
import { messagingConfigProperties } from '@vivier/messaging';

/** Every variable the chat service reads; the type below is derived from it, never written twice. */
export const chatConfigSchema = Type.Object({
  ...baseConfigProperties,
  ...identityConfigProperties,
  ...databaseConfigProperties,
  ...redisConfigProperties,
  ...kafkaConfigProperties,
  ...messagingConfigProperties,
  ...s3ConfigProperties,
  PORT: Env.port(8082, 'HTTP port of the chat service.'),
});

export type ChatConfig = Static<typeof chatConfigSchema>;

export function loadChatConfig(env: NodeJS.ProcessEnv = process.env): ChatConfig {
  return loadConfig('chat', chatConfigSchema, env);
}
