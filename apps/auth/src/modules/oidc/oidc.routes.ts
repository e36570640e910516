import { Type } from '@sinclair/typebox';
import type { ServiceApp } from '@vivier/service-kit';
import { SignedIn, problemResponses } from '../../http.schema';
import { originOf } from '../audit/audit.service';
import { STATE_COOKIE, type OidcService } from './oidc.service';

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
          'Exchanges the code, verifies the ID token and signs in (the account is found by linked identity or verified email, or created). Answers the tokens as JSON, or redirects to the configured client URL with them in the fragment. A wrong or unknown `state` is 400 `invalid_state`; a password account no provider has vouched for is not linked by email (409 `account_exists`).',
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
        response: { 200: SignedIn, 302: Type.Null({ description: 'to OIDC_CLIENT_REDIRECT_URL with the tokens in the fragment' }), ...problemResponses(400, 403, 404, 409, 503) },
      },
    },
    async (request, reply) => {
      const { provider } = request.params;
      reply.header('cache-control', 'no-store');
      reply.header('set-cookie', oidc.clearCookie(provider));
      const signedIn = await oidc.callback(provider, request.query, cookieValue(request.headers.cookie, STATE_COOKIE), originOf(request));
      if (!clientRedirectUrl) return signedIn;
      const fragment = new URLSearchParams({
        accessToken: signedIn.accessToken,
        refreshToken: signedIn.refreshToken,
        expiresIn: String(signedIn.expiresIn),
        tokenType: 'Bearer',
      });
      return reply.code(302).header('location', `${clientRedirectUrl.split('#')[0]}#${fragment.toString()}`).send(null);
    },
  );
}
