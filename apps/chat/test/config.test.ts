import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '@vivier/service-kit';
import { chatConfigSchema, loadChatConfig } from '../src/config';

describe('chat configuration', () => {
  it('documents every variable it reads in .env.example', () => {
    const example = readFileSync(new URL('../../../.env.example', import.meta.url), 'utf8');
    const documented = new Set([...example.matchAll(/^([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]));
    const missing = Object.keys(chatConfigSchema.properties).filter((name) => !documented.has(name));
    expect(missing).toEqual([]);
  });

  it('stops with a message naming a malformed variable', () => {
    expect(() => loadChatConfig({ DATABASE_URL: 'postgres://x@127.0.0.1/db', PORT: '70000' })).toThrowError(ConfigError);
    expect(() => loadChatConfig({ DATABASE_URL: 'postgres://x@127.0.0.1/db', PORT: '70000' })).toThrowError(/PORT/);
  });

  it('checks the master key of provider API keys as admin does: no weak key, no development default in production', () => {
    const base = { DATABASE_URL: 'postgres://x@127.0.0.1/db', INTERNAL_IDENTITY_SECRET: 'x'.repeat(40) };
    expect(() => loadChatConfig({ ...base, PROVIDER_KEY_ENCRYPTION_KEY: Buffer.alloc(32).toString('base64') })).toThrowError(/PROVIDER_KEY_ENCRYPTION_KEY: looks weak/);
    expect(() => loadChatConfig({ ...base, NODE_ENV: 'production' })).toThrowError(/PROVIDER_KEY_ENCRYPTION_KEY: is the development default/);
    expect(() => loadChatConfig({ ...base, PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS: 'not-a-key' })).toThrowError(/PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS/);
    const key = Buffer.from(Array.from({ length: 32 }, (_, i) => i * 7 + 1)).toString('base64');
    expect(loadChatConfig({ ...base, NODE_ENV: 'production', PROVIDER_KEY_ENCRYPTION_KEY: key }).PROVIDER_KEY_ENCRYPTION_KEY).toBe(key);
  });
});

describe('chat start-up without a database', () => {
  it('names DATABASE_URL when it is missing in production, and takes its local role on the npm start database elsewhere', () => {
    expect(() => loadChatConfig({ NODE_ENV: 'production' })).toThrowError(/DATABASE_URL: is required but not set/);
    expect(loadChatConfig({}).DATABASE_URL).toBe('postgres://chat_svc:vivier-dev@127.0.0.1:5432/vivier');
  });
});
