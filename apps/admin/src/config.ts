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
} from '@vivier/service-kit';
import { messagingConfigProperties } from '@vivier/messaging';
import { parseAllowedHosts, providerKeyConfigIssues, providerKeyConfigProperties } from '@vivier/providers';
import { loadPriceTable, PriceTableError, type PriceTable } from './modules/usage/price-table';

/** Every variable the admin service reads; the type below is derived from it, never written twice. */
export const adminConfigSchema = Type.Object({
  ...baseConfigProperties,
  ...identityConfigProperties,
  ...databaseConfigProperties,
  ...redisConfigProperties,
  ...kafkaConfigProperties,
  ...messagingConfigProperties,
  PORT: Env.port(8083, 'HTTP port of the admin service.'),

  ...providerKeyConfigProperties,
  PROVIDER_ALLOWED_HOSTS: Env.list('', 'Comma-separated private hosts (names or addresses) that provider base URLs set through the admin API may use.'),
  PROVIDER_REPUBLISH_HOURS: Type.Integer({
    minimum: 0,
    // Past 2^31 - 1 ms a Node timer fires at once.
    maximum: 596,
    default: 24,
    description:
      "Every provider's settings are published again (provider.configured at its current revision) at start and this often, so chat and workers whose settings went missing (a database restored or created after the event left Kafka's retention) get them back; keep it below the topic's retention. 0 = at start only.",
  }),
  PRICE_TABLE_FILE: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'JSON file of model prices in USD per million tokens, {"<provider>/<model>": {"input": 0.15, "output": 0.6}, "<provider>/*": {...}}, merged over the built-in table of common models.',
    }),
  ),
});

export type AdminConfig = Static<typeof adminConfigSchema>;

export function allowedProviderHostsOf(config: Pick<AdminConfig, 'PROVIDER_ALLOWED_HOSTS'>): string[] {
  return parseAllowedHosts(config.PROVIDER_ALLOWED_HOSTS);
}

/** The price table: PRICE_TABLE_FILE over the built-in one. Throws ConfigError naming the variable. */
export function priceTableOf(config: Pick<AdminConfig, 'PRICE_TABLE_FILE'>): PriceTable {
  try {
    return loadPriceTable(config.PRICE_TABLE_FILE);
  } catch (error) {
    if (error instanceof PriceTableError) throw new ConfigError('admin', [{ variable: 'PRICE_TABLE_FILE', message: error.message }]);
    throw error;
  }
}

export function loadAdminConfig(env: NodeJS.ProcessEnv = process.env): AdminConfig {
  const config = loadConfig('admin', adminConfigSchema, env);
  const issues = providerKeyConfigIssues(config);
  if (issues.length > 0) throw new ConfigError('admin', issues);
  priceTableOf(config);
  return config;
}
