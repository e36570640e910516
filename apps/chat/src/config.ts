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
  splitList,
} from '@vivier/service-kit';
import { messagingConfigProperties } from '@vivier/messaging';
import {
  providerConfigProperties,
  providerKeyConfigIssues,
  providerSettingsConfigProperties,
  providersFromConfig,
  type ProvidersConfig,
} from '@vivier/providers';

/** Every variable the chat service reads; the type below is derived from it, never written twice. */
export const chatConfigSchema = Type.Object({
  ...baseConfigProperties,
  ...identityConfigProperties,
  ...databaseConfigProperties,
  ...redisConfigProperties,
  ...kafkaConfigProperties,
  ...messagingConfigProperties,
  ...s3ConfigProperties,
  ...providerConfigProperties,
  ...providerSettingsConfigProperties,
  PORT: Env.port(8082, 'HTTP port of the chat service.'),
  CHAT_DEFAULT_MODEL: Env.string('', 'Model of new chats that name none (an id or alias); empty = the first model the router lists.'),
  CHAT_MAX_OUTPUT_TOKENS: Env.int(4096, 'Longest reply asked of a model (tokens), unless a message asks for less; reserved against quotas.', 1),
  CHAT_USAGE_SETTLE_LINGER_MS: Env.int(100, 'How long an OpenAI API settlement (quota and usage event) of a user known to be far from their limit (no limit, or room for 16 more such requests as of the last 10 s) waits for others to share its statement, when none is being written (otherwise it is written at once); 0 = none.', 0),
  CHAT_QUOTA_LEASE_REQUESTS: Env.int(16, 'OpenAI API: for a user far from their limit, one quota reservation statement reserves this many requests\' worth (at most an eighth of what is left), and the next requests on this instance are granted from it without a statement; given back after 1 s unused or 10 s; 0 or 1 = off.', 0),
  CHAT_QUOTA_HOLDER_TIMEOUT_MS: Env.int(60_000, 'OpenAI API: quota reservations and leases this instance holds in memory are given back by the other instances once it has not renewed its holder row for this long (it renews every CHAT_SWEEP_INTERVAL_MS, at most a third of this).', 1000),
  CHAT_REPLY_LEASE_MS: Env.int(15_000, 'Lease of a running reply in Redis; a reply whose instance stopped renewing it is marked failed.', 1000),
  CHAT_SWEEP_INTERVAL_MS: Env.int(10_000, 'How often replies with an expired lease, and quota holders that expired, are looked for.', 100),
  CHAT_STREAM_RETENTION_SECONDS: Env.int(3600, 'How long the events of a finished reply stay in Redis for resuming (then the database answers).', 1),
  CHAT_STREAM_MAX_EVENTS: Env.int(20_000, 'Bound of the Redis stream of one reply (events).', 100),
  CHAT_RESPONSE_CACHE_TTL_SECONDS: Env.int(86_400, 'Lifetime of cached replies to identical temperature-0 requests; 0 turns the cache off.'),
  CHAT_UPLOAD_MAX_BYTES: Env.int(10_485_760, 'Largest file accepted by POST /api/v1/files (bytes); larger ones get 413.', 1),
  CHAT_UPLOAD_ALLOWED_TYPES: Env.list(
    'text/plain,text/markdown,text/csv,application/json,image/png,image/jpeg,image/gif,image/webp',
    'Comma-separated media types accepted as attachments; others get 415.',
  ),
  CHAT_PARTITION_MONTHS_AHEAD: Env.int(2, 'Monthly message partitions kept ready beyond the current month.'),
  CHAT_SSE_HEARTBEAT_SECONDS: Env.int(15, 'Comment line sent on an idle SSE stream so proxies keep it open.', 1),
  CHAT_EXPORT_URL_TTL_SECONDS: Env.int(900, 'Lifetime of a presigned export download URL (made on each read, never past the export\'s deletion).', 60),
  S3_PUBLIC_ENDPOINT: Type.Optional(
    Type.String({ format: 'url', description: 'S3 endpoint as browsers reach it, for presigned download URLs; unset = S3_ENDPOINT.' }),
  ),
});

export type ChatConfig = Static<typeof chatConfigSchema>;

export function loadChatConfig(env: NodeJS.ProcessEnv = process.env): ChatConfig {
  const config = loadConfig('chat', chatConfigSchema, env);
  const issues = providerKeyConfigIssues(config);
  if (issues.length > 0) throw new ConfigError('chat', issues);
  return config;
}


/** Media types accepted as uploads. */
export function uploadTypesOf(config: ChatConfig): Set<string> {
  return new Set(splitList(config.CHAT_UPLOAD_ALLOWED_TYPES).map((t) => t.toLowerCase()));
}

/**
 * The providers configuration: the provider variables of `config` over `env` (a providers file
 * may name further key variables with `apiKeyEnv`). A bad value stops the service like any other
 * configuration error, naming the variable or the file entry.
 */
export function providersOf(config: ChatConfig, env: NodeJS.ProcessEnv = process.env): ProvidersConfig {
  return providersFromConfig(config, env, (issues) => new ConfigError('chat', issues.map((i) => ({ variable: i.path, message: i.message }))));
}
