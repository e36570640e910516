// The master key of provider API keys, shared by admin (which encrypts a key onto
// `provider.configured`) and the services that apply those events (which decrypt it in memory).
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import type { EncryptedSecret } from '@vivier/contracts';

/** The development default of PROVIDER_KEY_ENCRYPTION_KEY; refused when NODE_ENV=production. */
export const DEV_PROVIDER_KEY_ENCRYPTION_KEY = 'fWlWOBP8Gcje0KPml+LFvVoEXOBRwovCY7JHUgPV4po=';

const BASE64_32_BYTES = '^[A-Za-z0-9+/]{43}=$';

/** Why a master key is unacceptable, or undefined. */
export function masterKeyProblem(base64: string): string | undefined {
  if (!new RegExp(BASE64_32_BYTES).test(base64)) return 'must be base64 of exactly 32 bytes';
  const key = Buffer.from(base64, 'base64');
  if (key.length !== 32) return 'must be base64 of exactly 32 bytes';
  // 32 random bytes have ~30 distinct values; fewer than 8 means a pattern, not a key.
  if (new Set(key).size < 8) return 'looks weak (too few distinct bytes); use 32 random bytes: openssl rand -base64 32';
  return undefined;
}

/** The id of a master key on events and rows: a short fingerprint (SHA-256), never the key. */
export function masterKeyId(key: Buffer): string {
  return `pk-${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
}

/**
 * The two variables of the master key, for the configuration schema of every service that holds it
 * (admin, and chat and the worker, which open the keys on `provider.configured`).
 */
export const providerKeyConfigProperties = {
  PROVIDER_KEY_ENCRYPTION_KEY: Type.String({
    default: DEV_PROVIDER_KEY_ENCRYPTION_KEY,
    description:
      'Base64 of 32 random bytes (openssl rand -base64 32): the master key of provider API keys. Admin wraps the per-provider data keys with it and encrypts the key on `provider.configured` events; chat and the worker decrypt those, so all three need the same value. The development default is refused in production.',
  }),
  PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS: Type.String({
    default: '',
    description:
      'Comma-separated earlier values of PROVIDER_KEY_ENCRYPTION_KEY, during a rotation: admin re-wraps data keys wrapped with one of them; chat still opens provider keys sent under them.',
  }),
};

/**
 * The variables of a service that applies the admin API's provider settings (chat, worker): the
 * master key, and how often the stored settings are read again.
 */
export const providerSettingsConfigProperties = {
  ...providerKeyConfigProperties,
  PROVIDER_SETTINGS_POLL_MS: Type.Integer({
    minimum: 1000,
    default: 30_000,
    description:
      'How often provider settings made through the admin API are read again, should the Redis message of a change have been missed (ms).',
  }),
};

/** The master keys that open provider API keys from the admin API: the current one first. */
export function providerMasterKeys(config: { PROVIDER_KEY_ENCRYPTION_KEY: string; PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS: string }): string[] {
  return [config.PROVIDER_KEY_ENCRYPTION_KEY, ...previousProviderKeys(config)];
}

/** PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS as a list. */
export function previousProviderKeys(config: { PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS: string }): string[] {
  return config.PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS.split(',')
    .map((k) => k.trim())
    .filter((k) => k !== '');
}

/** What is wrong with the master key variables, each naming its variable (empty when nothing is). */
export function providerKeyConfigIssues(config: {
  NODE_ENV?: string;
  PROVIDER_KEY_ENCRYPTION_KEY: string;
  PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS: string;
}): Array<{ variable: string; message: string }> {
  const issues: Array<{ variable: string; message: string }> = [];
  const current = masterKeyProblem(config.PROVIDER_KEY_ENCRYPTION_KEY);
  if (current) issues.push({ variable: 'PROVIDER_KEY_ENCRYPTION_KEY', message: current });
  else if (config.NODE_ENV === 'production' && config.PROVIDER_KEY_ENCRYPTION_KEY === DEV_PROVIDER_KEY_ENCRYPTION_KEY)
    issues.push({
      variable: 'PROVIDER_KEY_ENCRYPTION_KEY',
      message: 'is the development default; set 32 random bytes in base64 (openssl rand -base64 32)',
    });
  for (const previous of previousProviderKeys(config)) {
    const problem = masterKeyProblem(previous);
    if (problem) issues.push({ variable: 'PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS', message: `an entry ${problem}` });
  }
  return issues;
}

/**
 * Encrypts an API key for a `provider.configured` event: AES-256-GCM under the master key (base64)
 * with a fresh 12-byte IV, the provider id as additional data, `keyId` naming the master key.
 */
export function sealEventSecret(masterKey: string, providerId: string, apiKey: string): EncryptedSecret {
  const key = Buffer.from(masterKey, 'base64');
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(providerId, 'utf8'));
  const ciphertext = Buffer.concat([cipher.update(apiKey, 'utf8'), cipher.final()]);
  return {
    algorithm: 'aes-256-gcm',
    keyId: masterKeyId(key),
    iv: iv.toString('base64'),
    ciphertext: ciphertext.toString('base64'),
    tag: cipher.getAuthTag().toString('base64'),
  };
}

/**
 * Opens the `apiKeyEnvelope` of a `provider.configured` event: AES-256-GCM under the master key
 * named by `keyId`, the provider id as additional data (a ciphertext moved to another provider
 * does not open). `masterKeys` are base64: the current key, then earlier ones. Throws when none
 * of them is the key named, or the envelope was tampered with.
 */
export function openEventSecret(masterKeys: string | readonly string[], providerId: string, envelope: EncryptedSecret): string {
  const keys = (typeof masterKeys === 'string' ? [masterKeys] : masterKeys).map((k) => Buffer.from(k, 'base64'));
  const key = keys.find((k) => masterKeyId(k) === envelope.keyId);
  if (!key) throw new Error(`encrypted with another master key (${envelope.keyId})`);
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(envelope.iv, 'base64'));
  decipher.setAAD(Buffer.from(providerId, 'utf8'));
  decipher.setAuthTag(Buffer.from(envelope.tag, 'base64'));
  return Buffer.concat([decipher.update(Buffer.from(envelope.ciphertext, 'base64')), decipher.final()]).toString('utf8');
}
