import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import {
  ConfigError,
  Env,
  baseConfigProperties,
  identityConfigProperties,
  databaseConfigProperties,
  kafkaConfigProperties,
  loadConfig,
  redisConfigProperties,
  splitList,
} from '@vivier/service-kit';
import { messagingConfigProperties } from '@vivier/messaging';

/** The development default of AUTH_KEY_ENCRYPTION_KEY; refused when NODE_ENV=production. */
export const DEV_KEY_ENCRYPTION_KEY = 'ZGV2LW9ubHkta2V5LWVuY3J5cHRpb24ta2V5LTMyYiE=';

/** Every variable the auth service reads; the type below is derived from it, never written twice. */
export const authConfigSchema = Type.Object({
  ...baseConfigProperties,
  ...identityConfigProperties,
  ...databaseConfigProperties,
  ...redisConfigProperties,
  ...kafkaConfigProperties,
  ...messagingConfigProperties,
  PORT: Env.port(8081, 'HTTP port of the auth service.'),

  // Access tokens and signing keys
  JWT_ISSUER: Env.string('vivier', '`iss` of access tokens.'),
  JWT_AUDIENCE: Env.string('vivier-api', '`aud` of access tokens.'),
  ACCESS_TOKEN_TTL_SECONDS: Env.int(900, 'Lifetime of an access token (seconds).', 10),
  JWT_KEY_ROTATION_DAYS: Env.int(30, 'Age after which the signing key is replaced automatically (days); 0 turns automatic rotation off.'),
  JWT_KEY_PUBLISH_AHEAD_SECONDS: Env.int(
    900,
    'How long a key of the automatic rotation is in the JWKS before it signs, so that every gateway has fetched it (keep it above the gateways\' JWKS_CACHE_TTL_SECONDS).',
    0,
  ),
  AUTH_KEY_ENCRYPTION_KEY: Type.String({
    pattern: '^[A-Za-z0-9+/]{43}=$',
    default: DEV_KEY_ENCRYPTION_KEY,
    description:
      'Base64 of 32 random bytes (openssl rand -base64 32): AES-256-GCM key that encrypts JWT signing keys and TOTP secrets at rest. The development default is refused in production.',
  }),

  // Refresh tokens
  REFRESH_TOKEN_LIFETIME_SECONDS: Env.int(604_800, 'Absolute lifetime of a login (its refresh tokens), whatever the rotations (seconds).', 1),
  REFRESH_TOKEN_REUSE_GRACE_MS: Env.int(
    5000,
    'How long a rotated refresh token still returns the same successor (lost responses, parallel tabs) before its reuse revokes the login (ms).',
  ),

  // Passwords and throttling
  ARGON2_MEMORY_KIB: Type.Integer({ minimum: 19_456, default: 19_456, description: 'argon2id memory cost (KiB); at least 19456.' }),
  ARGON2_TIME_COST: Type.Integer({ minimum: 2, default: 2, description: 'argon2id passes; at least 2.' }),
  ARGON2_PARALLELISM: Type.Integer({ minimum: 1, maximum: 16, default: 1, description: 'argon2id lanes; at least 1.' }),
  REGISTER_RATE_LIMIT_PER_IP: Env.int(10, 'Registrations one client IP may attempt per window.', 1),
  REGISTER_RATE_LIMIT_WINDOW_SECONDS: Env.int(3600, 'Window of the registration limit (seconds).', 1),
  LOGIN_MAX_FAILURES_PER_ACCOUNT: Env.int(5, 'Failed logins for one email per window before it is throttled (429).', 1),
  LOGIN_MAX_FAILURES_PER_IP: Env.int(50, 'Failed logins from one client IP per window before it is throttled (429).', 1),
  LOGIN_THROTTLE_WINDOW_SECONDS: Env.int(900, 'Window of the login throttles (seconds).', 1),

  // Roles
  ADMIN_EMAILS: Env.list('', 'Comma-separated emails that get the admin role when they register or sign in through OIDC.'),

  // MFA
  TOTP_ISSUER: Env.string('Vivier', 'Issuer shown by authenticator apps for TOTP secrets.'),

  // OIDC
  OIDC_PROVIDERS: Env.string(
    '[]',
    'JSON array of OIDC identity providers: [{"name","issuer","clientId","clientSecret","scopes"?}]. Sign-in starts at /api/v1/auth/oauth/<name>/start.',
  ),
  PUBLIC_BASE_URL: Env.url(
    ['http', 'https'],
    'http://127.0.0.1:8080',
    'Public base URL of the platform (the gateway); OIDC redirect URIs are <PUBLIC_BASE_URL>/api/v1/auth/oauth/<name>/callback.',
  ),
  OIDC_CLIENT_REDIRECT_URL: Type.Optional(
    Env.url(
      ['http', 'https'],
      undefined,
      'When set, a finished OIDC sign-in redirects here with the tokens in the URL fragment; otherwise the callback answers JSON.',
    ),
  ),
  OIDC_FLOW_TTL_SECONDS: Env.int(600, 'How long an OIDC sign-in may take from start to callback (seconds).', 30),
});

export type AuthConfig = Static<typeof authConfigSchema>;

export const OidcProviderSchema = Type.Object(
  {
    name: Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,31}$', description: 'path segment of the provider' }),
    issuer: Type.String({ pattern: '^https?://', description: 'issuer URL; discovery reads <issuer>/.well-known/openid-configuration' }),
    clientId: Type.String({ minLength: 1 }),
    clientSecret: Type.String({ minLength: 1 }),
    scopes: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),
  },
  { additionalProperties: false },
);
export type OidcProviderConfig = Static<typeof OidcProviderSchema>;

/** OIDC_PROVIDERS, parsed and checked. Throws ConfigError naming the variable. */
export function oidcProvidersOf(config: Pick<AuthConfig, 'OIDC_PROVIDERS'>): OidcProviderConfig[] {
  const fail = (message: string): never => {
    throw new ConfigError('auth', [{ variable: 'OIDC_PROVIDERS', message }]);
  };
  let parsed: unknown;
  try {
    parsed = JSON.parse(config.OIDC_PROVIDERS);
  } catch {
    return fail('is not valid JSON (expected [{"name","issuer","clientId","clientSecret","scopes"?}])');
  }
  const schema = Type.Array(OidcProviderSchema);
  if (!Value.Check(schema, parsed)) {
    const first = Value.Errors(schema, parsed).First();
    return fail(`is invalid at ${first?.path ?? '/'}: ${first?.message ?? 'unexpected value'}`);
  }
  const names = new Set<string>();
  for (const provider of parsed) {
    if (names.has(provider.name)) fail(`names the provider "${provider.name}" twice`);
    names.add(provider.name);
  }
  return parsed;
}

/** ADMIN_EMAILS as a set of normalized addresses. */
export function adminEmailsOf(config: Pick<AuthConfig, 'ADMIN_EMAILS'>): Set<string> {
  return new Set(splitList(config.ADMIN_EMAILS).map((e) => e.toLowerCase()));
}

export function loadAuthConfig(env: NodeJS.ProcessEnv = process.env): AuthConfig {
  const config = loadConfig('auth', authConfigSchema, env);
  if (config.NODE_ENV === 'production' && config.AUTH_KEY_ENCRYPTION_KEY === DEV_KEY_ENCRYPTION_KEY) {
    throw new ConfigError('auth', [
      { variable: 'AUTH_KEY_ENCRYPTION_KEY', message: 'is the development default; set 32 random bytes in base64 (openssl rand -base64 32)' },
    ]);
  }
  oidcProvidersOf(config);
  return config;
}
