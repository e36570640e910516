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

/** Every variable the worker service reads; the type below is derived from it, never written twice. */
export const workerConfigSchema = Type.Object({
  ...baseConfigProperties,
  ...identityConfigProperties,
  ...databaseConfigProperties,
  ...redisConfigProperties,
  ...kafkaConfigProperties,
  ...messagingConfigProperties,
  ...s3ConfigProperties,
  PORT: Env.port(8084, 'HTTP port of the worker service.'),
});

export type WorkerConfig = Static<typeof workerConfigSchema>;

export function loadWorkerConfig(env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  return loadConfig('worker', workerConfigSchema, env);
}
