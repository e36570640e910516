import { Type, type Static } from '@sinclair/typebox';
import { Actor, Email, Nullable, ProviderId, Role, StringEnum, Uuid } from './common.schema.js';

// Payloads of `auth.events`, produced by auth. Each is also an audit record: who (actor), what
// (the type), when (the envelope `time`), from where (actor ip / userAgent). None carries a
// password, a token, a TOTP secret, a recovery code or an API key.

export const LOGIN_METHODS = ['password', 'oidc'] as const;
const LoginMethod = StringEnum(LOGIN_METHODS, { description: 'how the user signed in' });
const OidcProvider = Type.Optional(ProviderId('OIDC identity provider, when method is `oidc`'));

export const AuthUserRegisteredSchema = Type.Object(
  {
    actor: Actor,
    userId: Uuid(),
    email: Email(),
    name: Nullable(Type.String({ minLength: 1, maxLength: 200 })),
    role: Role,
    method: LoginMethod,
    oidcProvider: OidcProvider,
  },
  { additionalProperties: false },
);
export type AuthUserRegisteredData = Static<typeof AuthUserRegisteredSchema>;

export const AuthUserUpdatedSchema = Type.Object(
  {
    actor: Actor,
    userId: Uuid(),
    changes: Type.Object(
      {
        email: Type.Optional(Email()),
        name: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 200 }))),
        role: Type.Optional(Role),
        passwordChanged: Type.Optional(
          Type.Literal(true, { description: 'the password was changed (never the password itself)' }),
        ),
      },
      { additionalProperties: false, minProperties: 1, description: 'the new values of what changed' },
    ),
  },
  { additionalProperties: false },
);
export type AuthUserUpdatedData = Static<typeof AuthUserUpdatedSchema>;

export const MFA_METHODS_USED = ['totp', 'recovery_code'] as const;

export const AuthUserLoggedInSchema = Type.Object(
  {
    actor: Actor,
    userId: Uuid(),
    sessionId: Uuid('the new session (refresh token family)'),
    method: LoginMethod,
    oidcProvider: OidcProvider,
    mfaMethod: Type.Optional(
      StringEnum(MFA_METHODS_USED, { description: 'second factor used, when MFA is on' }),
    ),
  },
  { additionalProperties: false },
);
export type AuthUserLoggedInData = Static<typeof AuthUserLoggedInSchema>;

export const LOGIN_FAILURE_REASONS = [
  'unknown_email',
  'invalid_password',
  'mfa_required',
  'invalid_mfa_code',
  'account_disabled',
  'throttled',
  'oidc_state_mismatch',
  'oidc_nonce_mismatch',
  'oidc_error',
] as const;

export const AuthLoginFailedSchema = Type.Object(
  {
    actor: Actor,
    email: Type.Optional(Email({ description: 'the email that was tried, when one was given' })),
    userId: Type.Optional(Uuid('the account the email belongs to, when there is one')),
    method: LoginMethod,
    oidcProvider: OidcProvider,
    reason: StringEnum(LOGIN_FAILURE_REASONS, {
      description: 'why it failed (internal: clients get the same answer for unknown email and bad password)',
    }),
  },
  { additionalProperties: false },
);
export type AuthLoginFailedData = Static<typeof AuthLoginFailedSchema>;

export const AuthSessionRefreshedSchema = Type.Object(
  {
    actor: Actor,
    userId: Uuid(),
    sessionId: Uuid('the session whose refresh token was used'),
    rotated: Type.Boolean({
      description:
        'true: the token was rotated to a new one; false: a token rotated moments ago was presented again within the reuse grace period and got the same successor',
    }),
  },
  { additionalProperties: false },
);
export type AuthSessionRefreshedData = Static<typeof AuthSessionRefreshedSchema>;

/** Auth operations other than sign-in (which has `login.failed`) whose refusals are audited. */
export const AUTH_OPERATIONS = ['refresh', 'register', 'password_change', 'mfa_enable', 'mfa_disable', 'api_key'] as const;

export const OPERATION_FAILURE_REASONS = [
  'invalid_token',
  'session_expired',
  'account_disabled',
  'email_taken',
  'weak_password',
  'invalid_password',
  'invalid_mfa_code',
  'throttled',
] as const;

export const AuthOperationFailedSchema = Type.Object(
  {
    actor: Actor,
    operation: StringEnum(AUTH_OPERATIONS),
    reason: StringEnum(OPERATION_FAILURE_REASONS, {
      description:
        'why it was refused: invalid_token (unknown, malformed or revoked refresh token or API key), session_expired, account_disabled, email_taken, weak_password (a password the policy refuses), invalid_password (the current password, on a change), invalid_mfa_code, throttled',
    }),
    userId: Type.Optional(Uuid('the account concerned, when it is known')),
    email: Type.Optional(Email({ description: 'the email given, on a refused registration' })),
  },
  { additionalProperties: false },
);
export type AuthOperationFailedData = Static<typeof AuthOperationFailedSchema>;

export const SESSION_REVOCATION_REASONS = [
  'logout',
  'logout_all',
  'reuse_detected',
  'admin_disabled',
  'password_changed',
  'revoked_by_user',
] as const;

export const AuthSessionRevokedSchema = Type.Object(
  {
    actor: Actor,
    userId: Uuid(),
    reason: StringEnum(SESSION_REVOCATION_REASONS),
    sessionIds: Type.Array(Uuid(), {
      uniqueItems: true,
      maxItems: 1000,
      description:
        'every session revoked by this action (may be empty, e.g. logout-all with no other session)',
    }),
    familyId: Type.Optional(Uuid('the refresh token family in which a reused token was detected')),
  },
  { additionalProperties: false },
);
export type AuthSessionRevokedData = Static<typeof AuthSessionRevokedSchema>;

export const AuthMfaEnabledSchema = Type.Object(
  {
    actor: Actor,
    userId: Uuid(),
    method: Type.Literal('totp'),
    recoveryCodesIssued: Type.Integer({ minimum: 0, description: 'how many recovery codes were issued' }),
  },
  { additionalProperties: false },
);
export type AuthMfaEnabledData = Static<typeof AuthMfaEnabledSchema>;

export const AuthMfaDisabledSchema = Type.Object(
  {
    actor: Actor,
    userId: Uuid(),
    method: Type.Literal('totp'),
  },
  { additionalProperties: false },
);
export type AuthMfaDisabledData = Static<typeof AuthMfaDisabledSchema>;

export const AuthApiKeyCreatedSchema = Type.Object(
  {
    actor: Actor,
    userId: Uuid('the owner of the key'),
    apiKeyId: Uuid(),
    name: Type.String({ minLength: 1, maxLength: 100 }),
  },
  { additionalProperties: false },
);
export type AuthApiKeyCreatedData = Static<typeof AuthApiKeyCreatedSchema>;

export const AuthApiKeyRevokedSchema = Type.Object(
  {
    actor: Actor,
    userId: Uuid('the owner of the key'),
    apiKeyId: Uuid(),
  },
  { additionalProperties: false },
);
export type AuthApiKeyRevokedData = Static<typeof AuthApiKeyRevokedSchema>;
