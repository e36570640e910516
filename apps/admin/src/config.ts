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
  splitList,
} from '@vivier/service-kit';
import { messagingConfigProperties } from '@vivier/messaging';
import { parseAllowedHosts } from '@vivier/providers';
import { loadPriceTable, PriceTableError, type PriceTable } from './modules/usage/price-table';
import { masterKeyProblem } from './modules/providers/provider-keys.service';

/** The development default of PROVIDER_KEY_ENCRYPTION_KEY; refused when NODE_ENV=production. */
export const DEV_PROVIDER_KEY_ENCRYPTION_KEY = 'fWlWOBP8Gcje0KPml+LFvVoEXOBRwovCY7JHUgPV4po=';

const BASE64_32_BYTES = '^[A-Za-z0-9+/]{43}=$';

/** Every variable the admin service reads; the type below is derived from it, never written twice. */
export const adminConfigSchema = Type.Object({
  ...baseConfigProperties,
  ...identityConfigProperties,
  ...databaseConfigProperties,
  ...redisConfigProperties,
  ...kafkaConfigProperties,
  ...messagingConfigProperties,
  PORT: Env.port(8083, 'HTTP port of the admin service.'),

  PROVIDER_KEY_ENCRYPTION_KEY: Type.String({
    pattern: BASE64_32_BYTES,
    default: DEV_PROVIDER_KEY_ENCRYPTION_KEY,
    description:
      'Base64 of 32 random bytes (openssl rand -base64 32): the master key that wraps the per-provider data keys of provider API keys, and encrypts the key on `provider.configured` events (chat needs the same value). The development default is refused in production.',
  }),
  PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS: Env.list(
    '',
    'Comma-separated earlier values of PROVIDER_KEY_ENCRYPTION_KEY: data keys wrapped with one of them are re-wrapped with the current key at start.',
  ),
  PROVIDER_ALLOWED_HOSTS: Env.list('', 'Comma-separated private hosts (names or addresses) that provider base URLs set through the admin API may use.'),
  PRICE_TABLE_FILE: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'JSON file of model prices in USD per million tokens, {"<provider>/<model>": {"input": 0.15, "output": 0.6}, "<provider>/*": {...}}, merged over the built-in table of common models.',
    }),
  ),
});

export type AdminConfig = Static<typeof adminConfigSchema>;

/** PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS as a list, each checked like the current key. */
export function previousProviderKeysOf(config: Pick<AdminConfig, 'PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS'>): string[] {
  return splitList(config.PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS);
}

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
  const issues: Array<{ variable: string; message: string }> = [];
  const current = masterKeyProblem(config.PROVIDER_KEY_ENCRYPTION_KEY);
  if (current) issues.push({ variable: 'PROVIDER_KEY_ENCRYPTION_KEY', message: current });
  else if (config.NODE_ENV === 'production' && config.PROVIDER_KEY_ENCRYPTION_KEY === DEV_PROVIDER_KEY_ENCRYPTION_KEY) {
    issues.push({ variable: 'PROVIDER_KEY_ENCRYPTION_KEY', message: 'is the development default; set 32 random bytes in base64 (openssl rand -base64 32)' });
  }
  for (const previous of previousProviderKeysOf(config)) {
    const problem = new RegExp(BASE64_32_BYTES).test(previous) ? masterKeyProblem(previous) : 'is not base64 of 32 bytes';
    if (problem) issues.push({ variable: 'PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS', message: `an entry ${problem}` });
  }
  if (issues.length > 0) throw new ConfigError('admin', issues);
  priceTableOf(config);
  return config;
}
