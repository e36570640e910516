import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '@vivier/service-kit';
import { authConfigSchema, loadAuthConfig } from '../src/config';

describe('auth configuration', () => {
  it('documents every variable it reads in .env.example', () => {
    const example = readFileSync(new URL('../../../.env.example', import.meta.url), 'utf8');
    const documented = new Set([...example.matchAll(/^([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]));
    const missing = Object.keys(authConfigSchema.properties).filter((name) => !documented.has(name));
    expect(missing).toEqual([]);
  });

  it('refuses malformed OIDC_PROVIDERS, naming the variable', () => {
    const env = { DATABASE_URL: 'postgres://x@127.0.0.1/db' };
    expect(() => loadAuthConfig({ ...env, OIDC_PROVIDERS: '[{' })).toThrowError(/OIDC_PROVIDERS/);
    expect(() => loadAuthConfig({ ...env, OIDC_PROVIDERS: '[{"name":"x","issuer":"ftp://idp"}]' })).toThrowError(/OIDC_PROVIDERS/);
    const providers = [{ name: 'google', issuer: 'https://accounts.google.com', clientId: 'id', clientSecret: 'secret' }];
    expect(loadAuthConfig({ ...env, OIDC_PROVIDERS: JSON.stringify(providers) }).OIDC_PROVIDERS).toBe(JSON.stringify(providers));
    expect(() => loadAuthConfig({ ...env, OIDC_PROVIDERS: JSON.stringify([...providers, ...providers]) })).toThrowError(/twice/);
  });

  it('refuses the development key encryption key in production, and argon2 parameters below the floor', () => {
    const env = { DATABASE_URL: 'postgres://x@127.0.0.1/db', INTERNAL_IDENTITY_SECRET: 'x'.repeat(40) };
    expect(() => loadAuthConfig({ ...env, NODE_ENV: 'production' })).toThrowError(/AUTH_KEY_ENCRYPTION_KEY/);
    expect(loadAuthConfig({ ...env, NODE_ENV: 'production', AUTH_KEY_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64') }).NODE_ENV).toBe('production');
    expect(() => loadAuthConfig({ ...env, AUTH_KEY_ENCRYPTION_KEY: 'c2hvcnQ=' })).toThrowError(/AUTH_KEY_ENCRYPTION_KEY/);
    expect(() => loadAuthConfig({ ...env, ARGON2_MEMORY_KIB: '4096' })).toThrowError(/ARGON2_MEMORY_KIB/);
    expect(() => loadAuthConfig({ ...env, ARGON2_TIME_COST: '1' })).toThrowError(/ARGON2_TIME_COST/);
  });

  it('defaults to a 7-day absolute login lifetime (QUALITY-BAR 2) and a short reuse grace (QUALITY-BAR 1)', () => {
    const config = loadAuthConfig({ DATABASE_URL: 'postgres://x@127.0.0.1/db' });
    expect(config.REFRESH_TOKEN_LIFETIME_SECONDS).toBe(7 * 24 * 3600);
    expect(config.REFRESH_TOKEN_REUSE_GRACE_MS).toBeLessThanOrEqual(10_000);
  });

  it('stops with a message naming a malformed variable', () => {
    expect(() => loadAuthConfig({ DATABASE_URL: 'postgres://x@127.0.0.1/db', PORT: '70000' })).toThrowError(ConfigError);
    expect(() => loadAuthConfig({ DATABASE_URL: 'postgres://x@127.0.0.1/db', PORT: '70000' })).toThrowError(/PORT/);
  });
});
