import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import type { EncryptedSecret } from '@vivier/contracts';
import { masterKeyId, masterKeyProblem, sealEventSecret } from '@vivier/providers';

/**
 * Envelope encryption of provider API keys.
 *
 * At rest (admin.providers): each provider has a random 256-bit data key; the API key is
 * encrypted with it (AES-256-GCM, AAD `vivier:provider-api-key:<provider id>`), and the data key
 * is wrapped (AES-256-GCM, AAD `vivier:provider-data-key:<provider id>`) with a wrapping key
 * derived from the master key (PROVIDER_KEY_ENCRYPTION_KEY, HKDF-SHA256). Rotating the master key
 * re-wraps 32-byte data keys only; a row copied to another provider id decrypts to nothing.
 *
 * On `provider.configured` events (the contract's `EncryptedSecret`): the API key encrypted with
 * AES-256-GCM under the master key itself, AAD = the provider id (UTF-8), a fresh 12-byte IV per
 * event; `keyId` names the master key. Chat holds the same PROVIDER_KEY_ENCRYPTION_KEY and opens
 * it with `openEventSecret` from @vivier/providers.
 *
 * Clear keys exist only in memory, for the time of one call: never logged, stored or published.
 */

/** What admin.providers stores for one API key. */
export interface SealedApiKey {
  kekId: string;
  dataKeyWrapped: Buffer;
  dataKeyIv: Buffer;
  dataKeyTag: Buffer;
  apiKeyCiphertext: Buffer;
  apiKeyIv: Buffer;
  apiKeyTag: Buffer;
}

const apiKeyAad = (providerId: string) => Buffer.from(`vivier:provider-api-key:${providerId}`, 'utf8');
const dataKeyAad = (providerId: string) => Buffer.from(`vivier:provider-data-key:${providerId}`, 'utf8');

function seal(key: Buffer, plaintext: Buffer, aad: Buffer): { iv: Buffer; ciphertext: Buffer; tag: Buffer } {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { iv, ciphertext, tag: cipher.getAuthTag() };
}

function open(key: Buffer, sealed: { iv: Buffer; ciphertext: Buffer; tag: Buffer }, aad: Buffer): Buffer {
  const decipher = createDecipheriv('aes-256-gcm', key, sealed.iv);
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.tag);
  return Buffer.concat([decipher.update(sealed.ciphertext), decipher.final()]);
}

interface MasterKey {
  id: string;
  key: Buffer;
  wrappingKey: Buffer;
}

function masterKey(base64: string): MasterKey {
  const key = Buffer.from(base64, 'base64');
  const problem = masterKeyProblem(base64);
  if (problem) throw new Error(`provider key encryption key ${problem}`);
  return { id: masterKeyId(key), key, wrappingKey: Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), 'vivier-admin:provider-data-key-wrap', 32)) };
}

export class ProviderKeyVault {
  private readonly current: MasterKey;
  private readonly byId: Map<string, MasterKey>;

  /** `current` seals; `previous` master keys only open (until their data keys are re-wrapped). */
  constructor(current: string, previous: string[] = []) {
    this.current = masterKey(current);
    this.byId = new Map([this.current, ...previous.map(masterKey)].map((k) => [k.id, k]));
  }

  get keyId(): string {
    return this.current.id;
  }

  /** Encrypts an API key for storage under a fresh data key of this provider. */
  seal(providerId: string, apiKey: string): SealedApiKey {
    const dataKey = randomBytes(32);
    try {
      const wrapped = seal(this.current.wrappingKey, dataKey, dataKeyAad(providerId));
      const sealed = seal(dataKey, Buffer.from(apiKey, 'utf8'), apiKeyAad(providerId));
      return {
        kekId: this.current.id,
        dataKeyWrapped: wrapped.ciphertext,
        dataKeyIv: wrapped.iv,
        dataKeyTag: wrapped.tag,
        apiKeyCiphertext: sealed.ciphertext,
        apiKeyIv: sealed.iv,
        apiKeyTag: sealed.tag,
      };
    } finally {
      dataKey.fill(0);
    }
  }

  /** The clear API key of a stored one. Throws when the row was moved to another provider or tampered with. */
  open(providerId: string, stored: SealedApiKey): string {
    const dataKey = this.unwrap(providerId, stored);
    try {
      return open(dataKey, { iv: stored.apiKeyIv, ciphertext: stored.apiKeyCiphertext, tag: stored.apiKeyTag }, apiKeyAad(providerId)).toString('utf8');
    } finally {
      dataKey.fill(0);
    }
  }

  /** True when the data key is wrapped with a master key other than the current one. */
  needsRewrap(stored: Pick<SealedApiKey, 'kekId'>): boolean {
    return stored.kekId !== this.current.id;
  }

  /** The same stored key with its data key re-wrapped by the current master key (the API key's ciphertext is unchanged). */
  rewrap(providerId: string, stored: SealedApiKey): SealedApiKey {
    const dataKey = this.unwrap(providerId, stored);
    try {
      const wrapped = seal(this.current.wrappingKey, dataKey, dataKeyAad(providerId));
      return { ...stored, kekId: this.current.id, dataKeyWrapped: wrapped.ciphertext, dataKeyIv: wrapped.iv, dataKeyTag: wrapped.tag };
    } finally {
      dataKey.fill(0);
    }
  }

  /** The API key as it travels on `provider.configured`: under the master key, bound to the provider id. */
  eventSecret(providerId: string, apiKey: string): EncryptedSecret {
    return sealEventSecret(this.current.key.toString('base64'), providerId, apiKey);
  }

  private unwrap(providerId: string, stored: SealedApiKey): Buffer {
    const master = this.byId.get(stored.kekId);
    if (!master) throw new Error(`the data key of provider ${providerId} is wrapped with an unknown master key (${stored.kekId})`);
    return open(master.wrappingKey, { iv: stored.dataKeyIv, ciphertext: stored.dataKeyWrapped, tag: stored.dataKeyTag }, dataKeyAad(providerId));
  }
}
