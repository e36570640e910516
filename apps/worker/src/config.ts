import { Type, type Static } from '@sinclair/typebox';
import {
  ConfigError,
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
import {
  providerConfigProperties,
  providerKeyConfigIssues,
  providerSettingsConfigProperties,
  providersFromConfig,
  type ProvidersConfig,
} from '@vivier/providers';

/** Every variable the worker service reads; the type below is derived from it, never written twice. */
export const workerConfigSchema = Type.Object({
  ...baseConfigProperties,
  ...identityConfigProperties,
  ...databaseConfigProperties,
  ...redisConfigProperties,
  ...kafkaConfigProperties,
  ...messagingConfigProperties,
  ...s3ConfigProperties,
  ...providerConfigProperties,
  ...providerSettingsConfigProperties,
  PORT: Env.port(8084, 'HTTP port of the worker service.'),
  COMPLETION_LEASE_MS: Env.int(
    30_000,
    'Lease of a running async completion, renewed while the provider answers; a crashed instance’s job is taken over after it runs out.',
    1000,
  ),
  TITLE_MODEL: Env.string('', 'Model that writes chat titles (an id or alias); empty = the chat’s own model.'),
  TITLE_TIMEOUT_MS: Env.int(
    20_000,
    'Budget of one title call, retries and fallbacks included; past it the chat is titled from its first message (or the event retried).',
    100,
  ),
  SUMMARY_MODEL: Env.string('', 'Model that writes the summaries of chats too long for their model’s window (an id or alias); empty = the model of the reply that overflowed.'),
  SUMMARY_MAX_TOKENS: Env.int(600, 'Longest summary of a chat asked of the model, in tokens (at most an eighth of the reply model’s window); the summary replaces older messages in every later reply’s context.', 50),
  SUMMARY_TIMEOUT_MS: Env.int(
    60_000,
    'Budget of one summary call, retries and fallbacks included; past it the job is retried (then given up: the next overflowing reply asks again).',
    100,
  ),
  CHAT_URL: Env.url(['http', 'https'], 'http://127.0.0.1:8082', 'Base URL of the chat service (internal export and summary-source routes).'),
  EXPORT_RETENTION_HOURS: Env.int(168, 'How long a data export stays in object storage before maintenance deletes it.', 1),
  MAINTENANCE_INTERVAL_MS: Env.int(3_600_000, 'Interval of each scheduled maintenance job (export expiry, run-log purge).', 100),
  MAINTENANCE_POLL_MS: Env.int(15_000, 'How often an instance looks for a maintenance job that is due.', 50),
});

export type WorkerConfig = Static<typeof workerConfigSchema>;

export function loadWorkerConfig(env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const config = loadConfig('worker', workerConfigSchema, env);
  const issues = providerKeyConfigIssues(config);
  if (issues.length > 0) throw new ConfigError('worker', issues);
  return config;
}

/**
 * The providers configuration: the provider variables of `config` over `env` (a providers file
 * may name further key variables with `apiKeyEnv`). A bad value stops the service like any other
 * configuration error.
 */
export function providersOf(config: WorkerConfig, env: NodeJS.ProcessEnv = process.env): ProvidersConfig {
  return providersFromConfig(config, env, (issues) => new ConfigError('worker', issues.map((i) => ({ variable: i.path, message: i.message }))));
}
