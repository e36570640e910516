import { Type } from '@sinclair/typebox';
import type { preHandlerAsyncHookHandler } from 'fastify';
import { caller, type ServiceApp } from '@vivier/service-kit';
import { Email, SignedIn, User, problemResponses } from '../../http.schema';
import { originOf } from '../audit/audit.service';
import { PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH } from '../passwords/passwords.service';
import type { AccountsService } from './accounts.service';

/**
 * A password's length as the schema counts it, in UTF-16 units: twice the policy's limit, which
 * counts characters (checkPasswordPolicy), so a passphrase of emoji the policy allows gets through.
 */
const PASSWORD_MAX_UNITS = 2 * PASSWORD_MAX_LENGTH;

const NewPassword = Type.String({
  minLength: PASSWORD_MIN_LENGTH,
  maxLength: PASSWORD_MAX_UNITS,
  description: `${PASSWORD_MIN_LENGTH} to ${PASSWORD_MAX_LENGTH} characters, not one of the most common passwords; passphrases welcome`,
});

export interface AccountsRoutesOptions {
  accounts: AccountsService;
  /** preHandler: any signed-in caller (access token or API key), still active. */
  activeCaller: preHandlerAsyncHookHandler;
  /** preHandler: a caller signed in with an access token, still active. */
  signedInCaller: preHandlerAsyncHookHandler;
}

export async function accountsRoutes(app: ServiceApp, { accounts, activeCaller, signedInCaller }: AccountsRoutesOptions): Promise<void> {
  app.post(
    '/api/v1/auth/register',
    {
      schema: {
        tags: ['auth'],
        summary: 'Create an account and sign in',
        description: 'Rate limited per client IP. A taken email answers 409 `email_taken`; a very common password 400 `weak_password`.',
        body: Type.Object(
          { email: Email, password: NewPassword, name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })) },
          { additionalProperties: false },
        ),
        response: { 201: SignedIn, ...problemResponses(400, 409, 429) },
      },
    },
    async (request, reply) => reply.code(201).send(await accounts.register(request.body, originOf(request))),
  );

  app.post(
    '/api/v1/auth/login',
    {
      schema: {
        tags: ['auth'],
        summary: 'Sign in with email and password (and a second factor when it is on)',
        description:
          'An unknown email and a wrong password get the same answer (401 `invalid_credentials`). 401 `mfa_required` when two-factor sign-in is on and no `mfaCode` was sent. Throttled per account and per client IP (429 with Retry-After).',
        body: Type.Object(
          {
            email: Email,
            password: Type.String({ minLength: 1, maxLength: PASSWORD_MAX_UNITS }),
            mfaCode: Type.Optional(Type.String({ minLength: 6, maxLength: 32, description: 'a TOTP code or a recovery code' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: SignedIn, ...problemResponses(400, 401, 403, 429) },
      },
    },
    async (request) => accounts.login(request.body, originOf(request)),
  );

  app.get(
    '/api/v1/auth/me',
    {
      preHandler: activeCaller,
      schema: { tags: ['auth'], summary: 'The caller’s account', security: [{ bearer: [] }], response: { 200: User, ...problemResponses(401, 403) } },
    },
    async (request) => accounts.me(caller(request)),
  );

  app.post(
    '/api/v1/auth/password',
    {
      preHandler: signedInCaller,
      schema: {
        tags: ['auth'],
        summary: 'Change the caller’s password',
        description: 'Needs the current password (unless the account has none, e.g. OIDC only). Ends every other session of the caller.',
        security: [{ bearer: [] }],
        body: Type.Object(
          { currentPassword: Type.Optional(Type.String({ minLength: 1, maxLength: PASSWORD_MAX_UNITS })), newPassword: NewPassword },
          { additionalProperties: false },
        ),
        response: { 204: Type.Null(), ...problemResponses(400, 401, 403, 429) },
      },
    },
    async (request, reply) => {
      await accounts.changePassword(caller(request), request.body, originOf(request));
      return reply.code(204).send(null);
    },
  );
}
