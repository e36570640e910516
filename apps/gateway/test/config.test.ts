import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '@vivier/service-kit';
import { gatewayConfigSchema, loadGatewayConfig } from '../src/config';

describe('gateway configuration', () => {
  it('documents every variable it reads in .env.example', () => {
    const example = readFileSync(new URL('../../../.env.example', import.meta.url), 'utf8');
    const documented = new Set([...example.matchAll(/^([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]));
    const missing = Object.keys(gatewayConfigSchema.properties).filter((name) => !documented.has(name));
    expect(missing).toEqual([]);
  });

  it('stops with a message naming a malformed variable', () => {
    expect(() =>
      loadGatewayConfig({ DATABASE_URL: 'postgres://x@127.0.0.1/db', PORT: '70000' }),
    ).toThrowError(ConfigError);
    expect(() =>
      loadGatewayConfig({ DATABASE_URL: 'postgres://x@127.0.0.1/db', PORT: '70000' }),
    ).toThrowError(/PORT/);
  });

  it('refuses a TRUST_PROXY entry that is neither an IP nor a CIDR, and an origin with a path', () => {
    expect(() => loadGatewayConfig({ TRUST_PROXY: '10.0.0.0/8, proxy.example.com' })).toThrowError(
      /TRUST_PROXY.*proxy\.example\.com/,
    );
    expect(() => loadGatewayConfig({ CORS_ORIGINS: 'https://app.example.com/path' })).toThrowError(
      /CORS_ORIGINS/,
    );
    const ok = loadGatewayConfig({
      TRUST_PROXY: '10.0.0.0/8,127.0.0.1,::1,fd00::/8',
      CORS_ORIGINS: 'https://app.example.com,http://127.0.0.1:5173',
    });
    expect(ok.TRUST_PROXY).toContain('fd00::/8');
  });

  it('caps the API key cache at 5 seconds so revocation is honoured within them', () => {
    expect(() => loadGatewayConfig({ API_KEY_CACHE_TTL_MS: '60000' })).toThrowError(/API_KEY_CACHE_TTL_MS/);
  });
});
