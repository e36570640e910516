import { sql } from 'drizzle-orm';
import { bigint, check, index, jsonb, pgSchema, primaryKey, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core';
import { messagingTables } from '@vivier/messaging';

/** Everything the auth service stores lives in this PostgreSQL schema, owned by the auth_svc role. */
export const authSchema = pgSchema('auth');

export const { outbox, processedEvents } = messagingTables(authSchema);

const createdAt = () => timestamp('created_at', { withTimezone: true }).notNull().defaultNow();

/**
 * Accounts. `email` is stored trimmed and lower-cased (one account per address). `passwordHash`
 * is an argon2id PHC string, null for accounts created through OIDC only.
 */
export const users = authSchema.table(
  'users',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    email: text('email').notNull(),
    name: text('name'),
    passwordHash: text('password_hash'),
    role: text('role').$type<'user' | 'admin'>().notNull().default('user'),
    disabledAt: timestamp('disabled_at', { withTimezone: true }),
    createdAt: createdAt(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [uniqueIndex('users_email_key').on(t.email), check('users_role_check', sql`${t.role} in ('user', 'admin')`)],
);

/**
 * A session is one login: the family of refresh tokens it rotates through. Its id is the `sid`
 * claim of every access token issued for it. `expiresAt` is absolute (login + lifetime) and never
 * moves with rotations.
 */
export const sessions = authSchema.table(
  'sessions',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    method: text('method').$type<'password' | 'oidc'>().notNull(),
    oidcProvider: text('oidc_provider'),
    createdAt: createdAt(),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
    lastUsedAt: timestamp('last_used_at', { withTimezone: true }).notNull().defaultNow(),
    ip: text('ip'),
    userAgent: text('user_agent'),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
    revokedReason: text('revoked_reason'),
  },
  (t) => [index('sessions_user_active_idx').on(t.userId, t.createdAt).where(sql`${t.revokedAt} is null`)],
);

/**
 * Refresh tokens, by SHA-256 of the opaque token (the token itself is never stored). A rotated
 * token keeps `rotatedAt` and its `successorId`; presenting it again inside the grace window gets
 * the same successor, after it the whole session is revoked.
 */
export const refreshTokens = authSchema.table(
  'refresh_tokens',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    sessionId: uuid('session_id')
      .notNull()
      .references(() => sessions.id, { onDelete: 'cascade' }),
    tokenHash: text('token_hash').notNull(),
    createdAt: createdAt(),
    rotatedAt: timestamp('rotated_at', { withTimezone: true }),
    successorId: uuid('successor_id'),
  },
  (t) => [uniqueIndex('refresh_tokens_hash_key').on(t.tokenHash), index('refresh_tokens_session_idx').on(t.sessionId)],
);

/**
 * Ed25519 keys that sign access tokens. The private key is PKCS#8, encrypted with AES-256-GCM under
 * AUTH_KEY_ENCRYPTION_KEY. The newest key not retired signs; a retired key stays published in the
 * JWKS until every token it signed has expired.
 */
export const signingKeys = authSchema.table('signing_keys', {
  kid: text('kid').primaryKey(),
  alg: text('alg').notNull(),
  publicJwk: jsonb('public_jwk').$type<Record<string, string>>().notNull(),
  privateKeyEncrypted: text('private_key_encrypted').notNull(),
  createdAt: createdAt(),
  /** When it starts signing: a key of the automatic rotation is published in the JWKS before that. */
  activatesAt: timestamp('activates_at', { withTimezone: true }).notNull().defaultNow(),
  /** When it stops signing (may be ahead: the activation of the key that follows it). */
  retiredAt: timestamp('retired_at', { withTimezone: true }),
});

/**
 * TOTP (RFC 6238) of a user. The row exists from setup; MFA is on once `enabledAt` is set.
 * `lastUsedStep` is the time step of the last accepted code: a code is accepted only for a later step.
 */
export const totpFactors = authSchema.table('totp_factors', {
  userId: uuid('user_id')
    .primaryKey()
    .references(() => users.id, { onDelete: 'cascade' }),
  secretEncrypted: text('secret_encrypted').notNull(),
  enabledAt: timestamp('enabled_at', { withTimezone: true }),
  lastUsedStep: bigint('last_used_step', { mode: 'number' }),
  createdAt: createdAt(),
});

/** Single-use MFA recovery codes, by SHA-256 of the normalized code. */
export const recoveryCodes = authSchema.table(
  'recovery_codes',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    codeHash: text('code_hash').notNull(),
    usedAt: timestamp('used_at', { withTimezone: true }),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('recovery_codes_user_hash_key').on(t.userId, t.codeHash)],
);

/** A user's identity at an OIDC provider (issuer `sub`), linked on first sign-in. */
export const oidcIdentities = authSchema.table(
  'oidc_identities',
  {
    provider: text('provider').notNull(),
    subject: text('subject').notNull(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    email: text('email'),
    createdAt: createdAt(),
    lastLoginAt: timestamp('last_login_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.provider, t.subject] }), index('oidc_identities_user_idx').on(t.userId)],
);

/**
 * OIDC authorization requests in flight, by SHA-256 of `state`; taken (deleted) by the callback,
 * so each is usable once. The PKCE verifier and nonce are encrypted.
 */
export const oidcLoginFlows = authSchema.table(
  'oidc_login_flows',
  {
    stateHash: text('state_hash').primaryKey(),
    provider: text('provider').notNull(),
    secretsEncrypted: text('secrets_encrypted').notNull(),
    createdAt: createdAt(),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
  },
  (t) => [index('oidc_login_flows_expires_idx').on(t.expiresAt)],
);

/**
 * OIDC sign-ins of accounts with two-factor sign-in on, waiting for the code, by SHA-256 of the
 * `mfaToken` the callback answered. Each try spends one of five `attempts` (in one statement); the
 * try that succeeds deletes the row; they expire after five minutes.
 */
export const oidcMfaChallenges = authSchema.table(
  'oidc_mfa_challenges',
  {
    tokenHash: text('token_hash').primaryKey(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    provider: text('provider').notNull(),
    attempts: bigint('attempts', { mode: 'number' }).notNull().default(0),
    createdAt: createdAt(),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
  },
  (t) => [index('oidc_mfa_challenges_expires_idx').on(t.expiresAt), index('oidc_mfa_challenges_user_idx').on(t.userId)],
);

/** API keys (`vk_…`), by SHA-256 of the key; `prefix` is what the owner sees in lists. */
export const apiKeys = authSchema.table(
  'api_keys',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    prefix: text('prefix').notNull(),
    keyHash: text('key_hash').notNull(),
    createdAt: createdAt(),
    lastUsedAt: timestamp('last_used_at', { withTimezone: true }),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
  },
  (t) => [uniqueIndex('api_keys_hash_key').on(t.keyHash), index('api_keys_user_idx').on(t.userId, t.createdAt)],
);
