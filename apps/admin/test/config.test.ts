import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '@vivier/service-kit';
import { adminConfigSchema, loadAdminConfig, priceTableOf } from '../src/config';

describe('admin configuration', () => {
  it('documents every variable it reads in .env.example', () => {
    const example = readFileSync(new URL('../../../.env.example', import.meta.url), 'utf8');
    const documented = new Set([...example.matchAll(/^([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]));
    const missing = Object.keys(adminConfigSchema.properties).filter((name) => !documented.has(name));
    expect(missing).toEqual([]);
  });

  it('stops with a message naming a malformed variable', () => {
    expect(() => loadAdminConfig({ DATABASE_URL: 'postgres://x@127.0.0.1/db', PORT: '70000' })).toThrowError(ConfigError);
    expect(() => loadAdminConfig({ DATABASE_URL: 'postgres://x@127.0.0.1/db', PORT: '70000' })).toThrowError(/PORT/);
  });
});

describe('admin configuration: provider keys and prices', () => {
  const base = { DATABASE_URL: 'postgres://x@127.0.0.1/db', INTERNAL_IDENTITY_SECRET: 'x'.repeat(40) };

  it('refuses a master key that is not 32 bytes, a weak one, and the development default in production', () => {
    expect(() => loadAdminConfig({ ...base, PROVIDER_KEY_ENCRYPTION_KEY: Buffer.alloc(16, 7).toString('base64') })).toThrowError(/PROVIDER_KEY_ENCRYPTION_KEY/);
    expect(() => loadAdminConfig({ ...base, PROVIDER_KEY_ENCRYPTION_KEY: Buffer.alloc(32).toString('base64') })).toThrowError(/PROVIDER_KEY_ENCRYPTION_KEY: looks weak/);
    expect(() => loadAdminConfig({ ...base, PROVIDER_KEY_ENCRYPTION_KEY: Buffer.from('abcdabcdabcdabcdabcdabcdabcdabcd').toString('base64') })).toThrowError(/looks weak/);
    expect(() => loadAdminConfig({ ...base, NODE_ENV: 'production' })).toThrowError(/PROVIDER_KEY_ENCRYPTION_KEY: is the development default/);
    expect(() => loadAdminConfig({ ...base, PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS: 'not-a-key' })).toThrowError(/PROVIDER_KEY_ENCRYPTION_PREVIOUS_KEYS/);
    const key = randomBytes(32).toString('base64');
    expect(loadAdminConfig({ ...base, NODE_ENV: 'production', PROVIDER_KEY_ENCRYPTION_KEY: key }).PROVIDER_KEY_ENCRYPTION_KEY).toBe(key);
  });

  it('reads PRICE_TABLE_FILE over the built-in prices, and names it when it is bad', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'admin-config-'));
    const good = path.join(dir, 'good.json');
    await writeFile(good, JSON.stringify({ 'groq/*': { input: 0.5, output: 0.8 }, 'openai/gpt-4o-mini': { input: 1, output: 2 } }));
    const prices = priceTableOf(loadAdminConfig({ ...base, PRICE_TABLE_FILE: good }));
    expect(prices.priceOf('groq', 'groq/llama-3.3-70b')).toEqual({ input: 0.5, output: 0.8 });
    expect(prices.priceOf('openai', 'openai/gpt-4o-mini-2024-07-18')).toEqual({ input: 1, output: 2 });
    expect(prices.priceOf('anthropic', 'anthropic/claude-sonnet-4-5')).toEqual({ input: 3, output: 15 });

    const bad = path.join(dir, 'bad.json');
    await writeFile(bad, JSON.stringify({ 'openai/gpt-4o': { input: -1, output: 2 } }));
    expect(() => loadAdminConfig({ ...base, PRICE_TABLE_FILE: bad })).toThrowError(/PRICE_TABLE_FILE: .*bad\.json is invalid at \/openai~1gpt-4o\/input/);
    expect(() => loadAdminConfig({ ...base, PRICE_TABLE_FILE: path.join(dir, 'missing.json') })).toThrowError(/PRICE_TABLE_FILE: cannot read/);
  });
});
