import { Type } from '@sinclair/typebox';
import type { ServiceApp } from '@vivier/service-kit';
import { HttpProblem } from '@vivier/service-kit';
import { Problem, SignedIn, problemResponses } from '../../http.schema';
import { originOf } from '../audit/audit.service';
import { STATE_COOKIE, type OidcService } from './oidc.service';

/** The callback's 401 `mfa_required`: a problem that also carries the token that finishes the sign-in. */
const MfaRequired = Type.Composite(
  [
    Problem,
    Type.Object({
      mfaToken: Type.Optional(Type.String({ description: 'with `mfa_required`: send it with the code to POST /api/v1/auth/oauth/mfa (single use)' })),
      expiresIn: Type.Optional(Type.Integer({ description: 'with `mfa_required`: seconds the token stays valid' })),
    }),
  ],
  { additionalProperties: true, description: 'RFC 9457 problem details: two-factor sign-in is on for this account' },
);

const ProviderParams = Type.Object({ provider: Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,31}$' }) });

/** One cookie's value from a Cookie header. */
function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const index = part.indexOf('=');
    if (index > 0 && part.slice(0, index).trim() === name) return part.slice(index + 1).trim();
  }
  return undefined;
}

export interface OidcRoutesOptions {
  oidc: OidcService;
  /** Where a finished sign-in goes with the tokens in the fragment; JSON when unset. */
  clientRedirectUrl: string | undefined;
}

export async function oidcRoutes(app: ServiceApp, { oidc, clientRedirectUrl }: OidcRoutesOptions): Promise<void> {
  app.get(
    '/api/v1/auth/oauth/:provider/start',
    {
      schema: {
        tags: ['auth'],
        summary: 'Start signing in with an OpenID Connect provider',
        description: 'Redirects (302) to the provider with an authorization code request (PKCE S256, state, nonce).',
        params: ProviderParams,
        response: { 302: Type.Null({ description: 'to the identity provider' }), ...problemResponses(400, 404, 503) },
      },
    },
    async (request, reply) => {
      const { location, setCookie } = await oidc.start(request.params.provider);
      return reply.code(302).header('set-cookie', setCookie).header('cache-control', 'no-store').header('location', location).send(null);
    },
  );

  app.get(
    '/api/v1/auth/oauth/:provider/callback',
    {
      schema: {
        tags: ['auth'],
        summary: 'Where the identity provider sends the browser back',
        description:
          'Exchanges the code, verifies the ID token and signs in (the account is found by linked identity or verified email, or created). Answers the tokens as JSON, or redirects to the configured client URL with them in the fragment. A wrong or unknown `state` is 400 `invalid_state`; a password account no provider has vouched for is not linked by email (409 `account_exists`). An account with two-factor sign-in on gets 401 `mfa_required` with an `mfaToken` instead (in redirect mode: `mfaToken` and `expiresIn` in the fragment), to send with a code to `POST /api/v1/auth/oauth/mfa`.',
        params: ProviderParams,
        querystring: Type.Object(
          {
            state: Type.Optional(Type.String({ maxLength: 512 })),
            code: Type.Optional(Type.String({ maxLength: 4096 })),
            error: Type.Optional(Type.String({ maxLength: 512 })),
            error_description: Type.Optional(Type.String({ maxLength: 2048 })),
            iss: Type.Optional(Type.String({ maxLength: 2048 })),
          },
          { additionalProperties: true },
        ),
        response: {
          200: SignedIn,
          302: Type.Null({ description: 'to OIDC_CLIENT_REDIRECT_URL with the tokens (or the mfaToken) in the fragment' }),
          401: MfaRequired,
          ...problemResponses(400, 403, 404, 409, 503),
        },
      },
    },
    async (request, reply) => {
      const { provider } = request.params;
      reply.header('cache-control', 'no-store');
      reply.header('set-cookie', oidc.clearCookie(provider));
      const redirect = (to: string, fragment: Record<string, string>) =>
        reply.code(302).header('location', `${to.split('#')[0]}#${new URLSearchParams(fragment).toString()}`).send(null);
      let signedIn;
      try {
        signedIn = await oidc.callback(provider, request.query, cookieValue(request.headers.cookie, STATE_COOKIE), originOf(request));
      } catch (error) {
        // The client app asks for the code and finishes the sign-in itself.
        if (clientRedirectUrl && error instanceof HttpProblem && error.code === 'mfa_required' && typeof error.extensions.mfaToken === 'string') {
          return redirect(clientRedirectUrl, { mfaToken: String(error.extensions.mfaToken), expiresIn: String(error.extensions.expiresIn) });
        }
        throw error;
      }
      if (!clientRedirectUrl) return signedIn;
      return redirect(clientRedirectUrl, { accessToken: signedIn.accessToken, refreshToken: signedIn.refreshToken, expiresIn: String(signedIn.expiresIn), tokenType: 'Bearer' });
    },
  );

  app.post(
    '/api/v1/auth/oauth/mfa',
    {
      schema: {
        tags: ['auth'],
        summary: 'Finish an OIDC sign-in with the second factor',
        description:
          'For an account with two-factor sign-in on, the OIDC callback answers 401 `mfa_required` with an `mfaToken`; this finishes that sign-in with a TOTP code or a recovery code. A wrong code is 401 `invalid_mfa_code` (a token allows five tries in all); an unknown, expired or finished token is 401 `invalid_mfa_token`. Throttled per account and per client IP as password sign-in is (429 with Retry-After).',
        body: Type.Object(
          {
            mfaToken: Type.String({ minLength: 43, maxLength: 43, pattern: '^[A-Za-z0-9_-]+$', description: 'from the callback' }),
            mfaCode: Type.String({ minLength: 6, maxLength: 32, description: 'a TOTP code or a recovery code' }),
          },
          { additionalProperties: false },
        ),
        response: { 200: SignedIn, ...problemResponses(400, 401, 403, 429) },
      },
    },
    async (request, reply) => {
      reply.header('cache-control', 'no-store');
      return oidc.finishWithMfa(request.body, originOf(request));
    },
  );
}
