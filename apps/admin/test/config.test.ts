import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '@vivier/service-kit';
import { adminConfigSchema, loadAdminConfig } from '../src/config';

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
