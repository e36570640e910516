import { createHash } from 'node:crypto';

/** What the benchmarks that run services as processes give every one of them. */

/**
 * Production mode on the run's infrastructure and dev broker, with the secrets production
 * insists on (it refuses the development defaults) and the run's Redis prefix.
 */
export function serviceEnv(infraEnv: Record<string, string>, kafkaBootstrap: string[]): NodeJS.ProcessEnv {
  return {
    ...process.env,
    ...infraEnv,
    NODE_ENV: 'production',
    LOG_LEVEL: 'warn',
    KAFKA_BROKERS: kafkaBootstrap.join(','),
    KAFKA_PRODUCER_IDEMPOTENT: 'false',
    INTERNAL_IDENTITY_SECRET: 'bench-internal-identity-secret-0123456789',
    AUTH_KEY_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64'),
    // Fixed across runs but not a pattern: chat and admin refuse a key with few distinct bytes.
    PROVIDER_KEY_ENCRYPTION_KEY: createHash('sha256').update('vivier-bench-provider-keys').digest('base64'),
    REDIS_KEY_PREFIX: infraEnv.VIVIER_TEST_REDIS_PREFIX,
  };
}

/** A gateway in front of the benchmark's auth and chat, rate limiting on with limits out of reach. */
export function gatewayEnv(base: NodeJS.ProcessEnv, authPort: number, chatPort: number): NodeJS.ProcessEnv {
  return {
    ...base,
    AUTH_URL: `http://127.0.0.1:${authPort}`,
    CHAT_URL: `http://127.0.0.1:${chatPort}`,
    ADMIN_URL: 'http://127.0.0.1:9',
    RATE_LIMIT_PER_USER: '100000000',
    RATE_LIMIT_PER_IP: '100000000',
    RATE_LIMIT_PER_IP_AUTHENTICATED: '100000000',
  };
}
