import { Type, FormatRegistry, type TObject, type TProperties, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

/** One problem with one environment variable. */
export interface ConfigIssue {
  variable: string;
  message: string;
}

/** Thrown at start-up when the environment does not satisfy a service's config schema. */
export class ConfigError extends Error {
  constructor(
    readonly service: string,
    readonly issues: ConfigIssue[],
  ) {
    super(
      `${service}: invalid configuration\n` + issues.map((i) => `  - ${i.variable}: ${i.message}`).join('\n'),
    );
    this.name = 'ConfigError';
  }
}

if (!FormatRegistry.Has('url')) {
  FormatRegistry.Set('url', (value) => {
    try {
      new URL(value);
      return true;
    } catch {
      return false;
    }
  });
}

// Reusable variable definitions. Each carries its own description: it becomes the `.env.example`
// documentation and the message when a value is rejected.
export const Env = {
  port: (fallback: number, description: string) =>
    Type.Integer({ minimum: 0, maximum: 65535, default: fallback, description }),
  url: (protocols: string[], fallback: string | undefined, description: string) =>
    Type.String({
      pattern: `^(${protocols.join('|')})://`,
      format: 'url',
      description,
      ...(fallback === undefined ? {} : { default: fallback }),
    }),
  list: (fallback: string, description: string) => Type.String({ default: fallback, description }),
  bool: (fallback: boolean, description: string) => Type.Boolean({ default: fallback, description }),
  int: (fallback: number, description: string, min = 0) => Type.Integer({ minimum: min, default: fallback, description }),
  enumOf: <T extends string>(values: readonly T[], fallback: T, description: string) =>
    Type.Union(
      values.map((v) => Type.Literal(v)),
      { default: fallback, description },
    ),
  string: (fallback: string | undefined, description: string) =>
    Type.String({ description, ...(fallback === undefined ? {} : { default: fallback }) }),
};

/** Variables every service reads. */
export const baseConfigProperties = {
  NODE_ENV: Env.enumOf(['development', 'test', 'production'] as const, 'development', 'Runtime mode.'),
  LOG_LEVEL: Env.enumOf(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const,
    'info',
    'pino log level.',
  ),
  HOST: Env.string('127.0.0.1', 'Interface to listen on (0.0.0.0 in containers).'),
  SHUTDOWN_TIMEOUT_MS: Env.int(10_000, 'How long in-flight requests may take to finish after SIGTERM.', 100),
  SHUTDOWN_GRACE_MS: Env.int(
    5000,
    'After SIGTERM, how long open keep-alive connections may stay while their clients move away (the service stops listening at once and ends sooner when none is left); 0 closes idle ones at once.',
    0,
  ),
} satisfies TProperties;

/**
 * Where `npm start` provisions each service's database (tools/dev-stack): one role per service,
 * `<service>_svc`, with the development password, in database `vivier` of the local PostgreSQL.
 */
export const LOCAL_DATABASE = { host: '127.0.0.1:5432', database: 'vivier', password: 'vivier-dev' } as const;

/** A service's own role on the local database `npm start` provisions: its DATABASE_URL when unset outside production. */
export function localDatabaseUrl(service: string): string {
  return `postgres://${service}_svc:${LOCAL_DATABASE.password}@${LOCAL_DATABASE.host}/${LOCAL_DATABASE.database}`;
}

export const databaseConfigProperties = {
  DATABASE_URL: Env.url(
    ['postgres', 'postgresql'],
    undefined,
    "PostgreSQL URL of this service's own role (it may touch only its own schema). Unset: the service's role on the database `npm start` provisions (postgres://<service>_svc:vivier-dev@127.0.0.1:5432/vivier), except with NODE_ENV=production, where it must be set.",
  ),
  DATABASE_POOL_MAX: Env.int(10, 'Maximum PostgreSQL connections in this process.', 1),
} satisfies TProperties;

/** The development default of INTERNAL_IDENTITY_SECRET: public, so refused when NODE_ENV=production. */
export const DEV_INTERNAL_IDENTITY_SECRET = 'dev-only-internal-identity-secret-change-me';

export const identityConfigProperties = {
  INTERNAL_IDENTITY_SECRET: Type.String({
    minLength: 32,
    default: DEV_INTERNAL_IDENTITY_SECRET,
    description:
      'Shared by the gateway and the services only: signs the caller identity the gateway forwards. Set a random 32+ byte value in production (the development default is refused there).',
  }),
} satisfies TProperties;

export const redisConfigProperties = {
  REDIS_URL: Env.url(['redis', 'rediss'], 'redis://127.0.0.1:6379', 'Redis URL.'),
  REDIS_KEY_PREFIX: Env.string('vivier:', 'Prefix of every Redis key this deployment writes.'),
} satisfies TProperties;

export const kafkaConfigProperties = {
  KAFKA_BROKERS: Type.String({
    pattern: '^[^,:\\s]+:\\d+(,[^,:\\s]+:\\d+)*$',
    default: '127.0.0.1:9092',
    description: 'Comma-separated Kafka bootstrap brokers (host:port).',
  }),
  KAFKA_CLIENT_ID: Env.string('vivier', 'Kafka client id prefix.'),
} satisfies TProperties;

/**
 * Reads the variables named by `schema` from `env`, applies defaults, converts strings to numbers
 * and booleans, and validates. Empty strings count as unset. Throws a ConfigError naming every bad
 * variable; never returns a partly valid config.
 */
export function loadConfig<T extends TObject>(service: string, schema: T, env: NodeJS.ProcessEnv = process.env): Static<T> {
  const raw: Record<string, unknown> = {};
  for (const key of Object.keys(schema.properties)) {
    const value = env[key];
    if (value !== undefined && value !== '') raw[key] = value;
  }
  // API.md: unset, the local defaults are used. Not in production, where a service must be told its database.
  if ('DATABASE_URL' in schema.properties && raw.DATABASE_URL === undefined && env.NODE_ENV !== 'production') raw.DATABASE_URL = localDatabaseUrl(service);
  const withDefaults = Value.Default(schema, raw);
  const converted = Value.Convert(schema, withDefaults);
  if (Value.Check(schema, converted)) {
    // Anyone who can reach a service's port could sign any identity (an admin's) with the public default.
    const loaded = converted as { NODE_ENV?: string; INTERNAL_IDENTITY_SECRET?: string };
    if (loaded.NODE_ENV === 'production' && loaded.INTERNAL_IDENTITY_SECRET === DEV_INTERNAL_IDENTITY_SECRET) {
      throw new ConfigError(service, [{ variable: 'INTERNAL_IDENTITY_SECRET', message: 'is the development default; set 32+ random bytes (openssl rand -hex 32), the same for every service' }]);
    }
    return converted;
  }

  const issues = new Map<string, string>();
  for (const error of Value.Errors(schema, converted)) {
    const variable = error.path.replace(/^\//, '').split('/')[0] || '(root)';
    if (issues.has(variable)) continue;
    const given = raw[variable];
    const property = schema.properties[variable] as { description?: string } | undefined;
    const what = given === undefined ? 'is required but not set' : `has an invalid value ${JSON.stringify(given)}`;
    issues.set(variable, `${what} (${error.message})${property?.description ? ` — ${property.description}` : ''}`);
  }
  throw new ConfigError(service, [...issues].map(([variable, message]) => ({ variable, message })));
}

/** Splits a comma-separated variable into trimmed, non-empty items. */
export function splitList(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}
