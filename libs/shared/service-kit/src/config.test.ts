import { describe, expect, it } from 'vitest';
import { Type } from '@sinclair/typebox';
import { ConfigError, Env, baseConfigProperties, databaseConfigProperties, identityConfigProperties, kafkaConfigProperties, loadConfig } from './config';

const schema = Type.Object({
  ...baseConfigProperties,
  ...databaseConfigProperties,
  ...kafkaConfigProperties,
  PORT: Env.port(8081, 'port'),
});

const valid = { DATABASE_URL: 'postgres://u:p@127.0.0.1:5432/db' };

describe('loadConfig', () => {
  it('applies defaults and converts numbers', () => {
    const config = loadConfig('svc', schema, { ...valid, PORT: '9001' });
    expect(config.PORT).toBe(9001);
    expect(config.LOG_LEVEL).toBe('info');
    expect(config.DATABASE_POOL_MAX).toBe(10);
    expect(config.KAFKA_BROKERS).toBe('127.0.0.1:9092');
  });

  it('refuses the public development INTERNAL_IDENTITY_SECRET in production, and takes it elsewhere', () => {
    const withIdentity = Type.Object({ ...baseConfigProperties, ...identityConfigProperties });
    expect(() => loadConfig('svc', withIdentity, { NODE_ENV: 'production' })).toThrowError(/INTERNAL_IDENTITY_SECRET: is the development default/);
    expect(loadConfig('svc', withIdentity, { NODE_ENV: 'production', INTERNAL_IDENTITY_SECRET: 'a'.repeat(64) }).INTERNAL_IDENTITY_SECRET).toBe('a'.repeat(64));
    expect(loadConfig('svc', withIdentity, {}).INTERNAL_IDENTITY_SECRET).toMatch(/^dev-only/);
  });

  it('names a missing required variable', () => {
    expect(() => loadConfig('svc', schema, { NODE_ENV: 'production' })).toThrowError(/DATABASE_URL: is required but not set/);
  });

  it("takes the service's role on the database npm start provisions when DATABASE_URL is unset, outside production only", () => {
    expect(loadConfig('chat', schema, {}).DATABASE_URL).toBe('postgres://chat_svc:vivier-dev@127.0.0.1:5432/vivier');
    expect(loadConfig('auth', schema, { NODE_ENV: 'test', DATABASE_URL: '' }).DATABASE_URL).toBe('postgres://auth_svc:vivier-dev@127.0.0.1:5432/vivier');
    expect(loadConfig('chat', schema, valid).DATABASE_URL).toBe(valid.DATABASE_URL);
    expect(() => loadConfig('chat', schema, { NODE_ENV: 'production' })).toThrowError(/DATABASE_URL: is required but not set/);
  });

  it('names each malformed variable with the value it got', () => {
    try {
      loadConfig('svc', schema, { ...valid, PORT: 'eighty', LOG_LEVEL: 'loud', KAFKA_BROKERS: 'nohost' });
      expect.fail('should have thrown');
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      const issues = (error as ConfigError).issues.map((i) => i.variable).sort();
      expect(issues).toEqual(['KAFKA_BROKERS', 'LOG_LEVEL', 'PORT']);
      expect((error as Error).message).toContain('PORT: has an invalid value "eighty"');
    }
  });

  it('rejects a database URL of another scheme', () => {
    expect(() => loadConfig('svc', schema, { DATABASE_URL: 'mysql://x@h/db' })).toThrowError(/DATABASE_URL/);
  });

  it('treats empty strings as unset', () => {
    expect(loadConfig('svc', schema, { ...valid, PORT: '' }).PORT).toBe(8081);
  });
});
