import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

export interface TestAccount {
  sub: string;
  email: string;
  email_verified: boolean;
  name?: string;
}

export interface TestIdentityProvider {
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** The account the next sign-in logs in as (the provider's login screen, answered by the test). */
  signInAs(account: TestAccount): void;
  /**
   * Plays the browser: follows the redirects from the authorization URL through the provider's
   * login and consent (cookies kept) until it is sent back to `callbackPrefix`; returns that URL.
   */
  authorize(authorizationUrl: string, callbackPrefix: string): Promise<URL>;
  stop(): Promise<void>;
}

/**
 * A real OpenID Connect provider (the `oidc-provider` package) on a loopback port, with one
 * confidential client. Its login and consent interactions complete themselves for the account
 * the test chose; discovery, the authorization code, PKCE, the token endpoint, the ID token and
 * the JWKS are all the provider's own.
 */
export async function startIdentityProvider(redirectUri: string): Promise<TestIdentityProvider> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const clientId = 'vivier-test';
  const clientSecret = 'a-client-secret-for-the-test-provider-only';
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const signingKey = { ...(await exportJWK(privateKey)), kid: 'test-idp-key', alg: 'RS256', use: 'sig' };
  const accounts = new Map<string, TestAccount>();
  let current: TestAccount | undefined;

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [redirectUri],
        response_types: ['code'],
        grant_types: ['authorization_code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys: [signingKey] },
    cookies: { keys: ['test-idp-cookie-signing-key'] },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    features: { devInteractions: { enabled: false } },
    pkce: { required: () => true },
    interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    findAccount: async (_ctx: unknown, sub: string) => {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return { accountId: sub, claims: async () => ({ ...account }) };
    },
  });
  const callback = provider.callback();

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (!req.url?.startsWith('/interaction/')) {
      callback(req, res);
      return;
    }
    void (async () => {
      try {
        const details = await provider.interactionDetails(req, res);
        const account = current;
        if (!account) throw new Error('the test did not choose an account');
        let result: Record<string, unknown>;
        if (details.prompt.name === 'login') {
          result = { login: { accountId: account.sub } };
        } else {
          const grant = new provider.Grant({ accountId: account.sub, clientId: String(details.params.client_id) });
          grant.addOIDCScope(String(details.params.scope));
          result = { consent: { grantId: await grant.save() } };
        }
        await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
      } catch (error) {
        res.statusCode = 500;
        res.end(String(error));
      }
    })();
  });

  return {
    issuer,
    clientId,
    clientSecret,
    signInAs(account) {
      accounts.set(account.sub, account);
      current = account;
    },
    async authorize(authorizationUrl, callbackPrefix) {
      const jar = new Map<string, string>();
      let url = new URL(authorizationUrl);
      for (let hop = 0; hop < 20; hop += 1) {
        if (url.toString().startsWith(callbackPrefix)) return url;
        const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
        const res = await fetch(url, { redirect: 'manual', headers: cookie ? { cookie } : {} });
        for (const line of res.headers.getSetCookie()) {
          const [pair] = line.split(';');
          const index = pair!.indexOf('=');
          const name = pair!.slice(0, index);
          const value = pair!.slice(index + 1);
          if (/max-age=0|expires=thu, 01 jan 1970/i.test(line) || value === '') jar.delete(name);
          else jar.set(name, value);
        }
        await res.arrayBuffer();
        const location = res.headers.get('location');
        if (res.status < 300 || res.status >= 400 || !location) {
          throw new Error(`identity provider answered ${res.status} at ${url.pathname}`);
        }
        url = new URL(location, url);
      }
      throw new Error('too many redirects');
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
