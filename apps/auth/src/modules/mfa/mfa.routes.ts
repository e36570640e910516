import { Type } from '@sinclair/typebox';
import type { preHandlerAsyncHookHandler } from 'fastify';
import { caller, type ServiceApp } from '@vivier/service-kit';
import { problemResponses } from '../../http.schema';
import { originOf } from '../audit/audit.service';
import type { MfaService } from './mfa.service';

const CodeBody = Type.Object(
  { code: Type.String({ minLength: 6, maxLength: 32, description: 'a current TOTP code (or, to disable, a recovery code)' }) },
  { additionalProperties: false },
);

export interface MfaRoutesOptions {
  mfa: MfaService;
  /** preHandler: a caller signed in with an access token (not an API key), still active. */
  signedInCaller: preHandlerAsyncHookHandler;
}

export async function mfaRoutes(app: ServiceApp, { mfa, signedInCaller }: MfaRoutesOptions): Promise<void> {
  app.post(
    '/api/v1/auth/mfa/totp/setup',
    {
      preHandler: signedInCaller,
      schema: {
        tags: ['auth'],
        summary: 'Start TOTP setup: a new secret for the authenticator app',
        description: 'MFA is not on until /mfa/totp/enable receives a valid code for this secret.',
        security: [{ bearer: [] }],
        response: {
          200: Type.Object({ secret: Type.String({ description: 'base32' }), otpauthUrl: Type.String({ description: 'otpauth://totp/… for a QR code' }) }),
          ...problemResponses(401, 403, 409),
        },
      },
    },
    async (request) => mfa.setup(caller(request)),
  );

  app.post(
    '/api/v1/auth/mfa/totp/enable',
    {
      preHandler: signedInCaller,
      schema: {
        tags: ['auth'],
        summary: 'Turn TOTP on with a valid code; returns single-use recovery codes (shown once)',
        security: [{ bearer: [] }],
        body: CodeBody,
        response: { 200: Type.Object({ recoveryCodes: Type.Array(Type.String()) }), ...problemResponses(400, 401, 403, 409, 429) },
      },
    },
    async (request) => mfa.enable(caller(request), request.body.code, originOf(request)),
  );

  app.post(
    '/api/v1/auth/mfa/totp/disable',
    {
      preHandler: signedInCaller,
      schema: {
        tags: ['auth'],
        summary: 'Turn TOTP off with a valid TOTP or recovery code',
        security: [{ bearer: [] }],
        body: CodeBody,
        response: { 204: Type.Null(), ...problemResponses(400, 401, 403, 429) },
      },
    },
    async (request, reply) => {
      await mfa.disable(caller(request), request.body.code, originOf(request));
      return reply.code(204).send(null);
    },
  );
}
