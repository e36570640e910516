import { createHash, randomBytes } from 'node:crypto';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import type { FastifyBaseLogger } from 'fastify';
import { createEvent, EVENTS, type AuthLoginFailedData } from '@vivier/contracts';
import type { Publish } from '@vivier/messaging';
import { HttpProblem, problems } from '@vivier/service-kit';
import type { OidcProviderConfig } from '../../config';
import type { AuthDatabase } from '../../database';
import type { SignedInView } from '../../http.schema';
import { constantTimeEqual, sha256Hex } from '../../security/opaque-token';
import type { SecretBox } from '../../security/secret-box';
import { accountDisabled, normalizeEmail, type AccountsService } from '../accounts/accounts.service';
import { actorOf, type RequestOrigin } from '../audit/audit.service';
import type { MfaService } from '../mfa/mfa.service';
import { oidcRepository, type OidcRepository } from './oidc.repository';

/** ID token signatures we accept: asymmetric only (never `none`, never HMAC with a shared secret). */
const ID_TOKEN_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];
const DISCOVERY_TTL_MS = 3600_000;
/** How long an OIDC sign-in waits for the second factor, and how many wrong codes it takes. */
export const MFA_CHALLENGE_TTL_SECONDS = 300;
const MFA_CHALLENGE_ATTEMPTS = 5;
const HTTP_TIMEOUT_MS = 10_000;

/** The part of a provider's discovery document this client uses. */
interface ProviderMetadata {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  jwks_uri: string;
  userinfo_endpoint?: string;
  id_token_signing_alg_values_supported?: string[];
  token_endpoint_auth_methods_supported?: string[];
}

interface ProviderState {
  config: OidcProviderConfig;
  metadata?: { value: ProviderMetadata; fetchedAt: number };
  jwks?: ReturnType<typeof createRemoteJWKSet>;
}

interface FlowSecrets {
  nonce: string;
  codeVerifier: string;
}

export interface OidcServiceOptions {
  db: AuthDatabase;
  publish: Publish;
  box: SecretBox;
  accounts: AccountsService;
  providers: OidcProviderConfig[];
  publicBaseUrl: string;
  flowTtlSeconds: number;
  secureCookies: boolean;
  mfa: MfaService;
  log: FastifyBaseLogger;
}

export const STATE_COOKIE = 'vivier_oidc_state';

const b64url = (bytes: Buffer) => bytes.toString('base64url');
const invalidState = () => new HttpProblem(400, 'invalid_state', 'This sign-in is unknown, expired or was started in another browser; start again.');
const providerUnavailable = (detail: string) => new HttpProblem(503, 'provider_unavailable', detail);
const invalidMfaToken = () =>
  new HttpProblem(401, 'invalid_mfa_token', 'This two-factor sign-in is unknown, expired, already finished or had too many wrong codes; sign in with the identity provider again.');

class FlowFailure extends Error {
  constructor(
    readonly reason: AuthLoginFailedData['reason'],
    readonly problem: HttpProblem,
    readonly extra: { email?: string; userId?: string } = {},
  ) {
    super(problem.message);
  }
}

/**
 * Sign-in through any OpenID Connect provider named in OIDC_PROVIDERS: discovery, authorization
 * code flow with PKCE (S256), `state` and `nonce`.
 *
 * The flow in flight lives in PostgreSQL (by SHA-256 of `state`, PKCE verifier and nonce sealed,
 * deleted by the callback that uses it), so it does not depend on Redis and works across
 * instances. `state` is also set in an HttpOnly cookie scoped to the provider's path: a callback
 * must come from the browser that started the sign-in (no login CSRF).
 *
 * An account with two-factor sign-in on needs its code here too: the provider vouches for who the
 * user is there, not for this account's second factor. The callback then answers 401
 * `mfa_required` with an `mfaToken` (single use, 5 minutes, 5 wrong codes), and
 * `POST /api/v1/auth/oauth/mfa` with that token and a code finishes the sign-in.
 */
export class OidcService {
  private readonly providers = new Map<string, ProviderState>();
  private readonly flows: OidcRepository;
  private lastPurge = 0;

  constructor(private readonly options: OidcServiceOptions) {
    for (const config of options.providers) this.providers.set(config.name, { config });
    this.flows = oidcRepository(options.db);
  }

  redirectUri(provider: string): string {
    return `${this.options.publicBaseUrl.replace(/\/+$/, '')}/api/v1/auth/oauth/${provider}/callback`;
  }

  cookiePath(provider: string): string {
    return `/api/v1/auth/oauth/${provider}`;
  }

  /** The authorization request URL and the state cookie to set with the redirect. */
  async start(providerName: string): Promise<{ location: string; setCookie: string }> {
    const provider = this.provider(providerName);
    const metadata = await this.metadata(provider);
    const state = b64url(randomBytes(32));
    const secrets: FlowSecrets = { nonce: b64url(randomBytes(32)), codeVerifier: b64url(randomBytes(32)) };
    const stateHash = sha256Hex(state);
    const now = Date.now();
    await this.flows.saveFlow({
      stateHash,
      provider: providerName,
      secretsEncrypted: this.options.box.seal(JSON.stringify(secrets), `oidc-flow:${stateHash}`),
      expiresAt: new Date(now + this.options.flowTtlSeconds * 1000),
    });
    if (now - this.lastPurge > 60_000) {
      this.lastPurge = now;
      void this.flows.purgeExpiredFlows(new Date(now)).catch((error: unknown) => this.options.log.warn({ err: error }, 'could not purge expired OIDC flows'));
    }
    const url = new URL(metadata.authorization_endpoint);
    const params = {
      response_type: 'code',
      client_id: provider.config.clientId,
      redirect_uri: this.redirectUri(providerName),
      scope: (provider.config.scopes ?? ['openid', 'email', 'profile']).join(' '),
      state,
      nonce: secrets.nonce,
      code_challenge: b64url(createHash('sha256').update(secrets.codeVerifier).digest()),
      code_challenge_method: 'S256',
    };
    for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
    return { location: url.toString(), setCookie: this.stateCookie(providerName, state, this.options.flowTtlSeconds) };
  }

  /** A cookie that clears the state cookie (sent with every callback answer). */
  clearCookie(providerName: string): string {
    return this.stateCookie(providerName, '', 0);
  }

  async callback(
    providerName: string,
    query: { state?: string; code?: string; error?: string; iss?: string },
    cookieState: string | undefined,
    origin: RequestOrigin,
  ): Promise<SignedInView> {
    const provider = this.provider(providerName);
    try {
      const secrets = await this.takeFlow(providerName, query.state, cookieState);
      const metadata = await this.metadata(provider);
      if (query.iss !== undefined && query.iss !== metadata.issuer) {
        throw new FlowFailure('oidc_error', new HttpProblem(400, 'oidc_error', 'The authorization response came from another issuer.'));
      }
      if (query.error || !query.code) {
        throw new FlowFailure('oidc_error', new HttpProblem(400, 'oidc_error', `The identity provider did not authorize the sign-in (${(query.error ?? 'no code').slice(0, 100)}).`));
      }
      const tokens = await this.exchangeCode(provider, metadata, query.code, secrets.codeVerifier);
      const claims = await this.verifyIdToken(provider, metadata, tokens.id_token, secrets.nonce);
      const profile = await this.profile(metadata, claims, tokens.access_token);
      return await this.signIn(providerName, claims.sub!, profile, origin);
    } catch (error) {
      if (!(error instanceof FlowFailure)) throw error;
      await this.options.accounts.loginFailed({ method: 'oidc', oidcProvider: providerName, reason: error.reason, ...error.extra }, origin);
      throw error.problem;
    }
  }

  private provider(name: string): ProviderState {
    const provider = this.providers.get(name);
    if (!provider) throw problems.notFound(`No identity provider named "${name}".`);
    return provider;
  }

  private stateCookie(provider: string, value: string, maxAge: number): string {
    return [
      `${STATE_COOKIE}=${value}`,
      `Path=${this.cookiePath(provider)}`,
      `Max-Age=${maxAge}`,
      'HttpOnly',
      // Lax: the callback is a top-level navigation from the provider's site, which Lax lets through.
      'SameSite=Lax',
      ...(this.options.secureCookies ? ['Secure'] : []),
    ].join('; ');
  }

  private async takeFlow(providerName: string, state: string | undefined, cookieState: string | undefined): Promise<FlowSecrets> {
    if (!state || !cookieState || !constantTimeEqual(state, cookieState)) {
      throw new FlowFailure('oidc_state_mismatch', invalidState());
    }
    const stateHash = sha256Hex(state);
    const flow = await this.flows.takeFlow(stateHash);
    if (!flow || flow.provider !== providerName || flow.expiresAt.getTime() <= Date.now()) {
      throw new FlowFailure('oidc_state_mismatch', invalidState());
    }
    return JSON.parse(this.options.box.open(flow.secretsEncrypted, `oidc-flow:${stateHash}`).toString('utf8')) as FlowSecrets;
  }

  private async metadata(provider: ProviderState): Promise<ProviderMetadata> {
    const cached = provider.metadata;
    if (cached && Date.now() - cached.fetchedAt < DISCOVERY_TTL_MS) return cached.value;
    const issuer = provider.config.issuer;
    const url = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    let document: ProviderMetadata;
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS), headers: { accept: 'application/json' } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      document = (await response.json()) as ProviderMetadata;
    } catch (error) {
      this.options.log.warn({ err: error, provider: provider.config.name, url }, 'OIDC discovery failed');
      if (cached) return cached.value;
      throw providerUnavailable(`The identity provider "${provider.config.name}" cannot be reached.`);
    }
    // OIDC Discovery §4.3: the document must name exactly the issuer it was fetched for.
    if (document.issuer !== issuer || !document.authorization_endpoint || !document.token_endpoint || !document.jwks_uri) {
      this.options.log.error({ provider: provider.config.name, issuer: document.issuer }, 'OIDC discovery document does not match the configured issuer');
      throw providerUnavailable(`The identity provider "${provider.config.name}" is misconfigured.`);
    }
    if (!provider.jwks || provider.metadata?.value.jwks_uri !== document.jwks_uri) {
      provider.jwks = createRemoteJWKSet(new URL(document.jwks_uri), { timeoutDuration: HTTP_TIMEOUT_MS });
    }
    provider.metadata = { value: document, fetchedAt: Date.now() };
    return document;
  }

  private async exchangeCode(provider: ProviderState, metadata: ProviderMetadata, code: string, codeVerifier: string): Promise<{ id_token: string; access_token?: string }> {
    const { clientId, clientSecret } = provider.config;
    const body = new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: this.redirectUri(provider.config.name), code_verifier: codeVerifier });
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
    const methods = metadata.token_endpoint_auth_methods_supported ?? ['client_secret_basic'];
    if (!methods.includes('client_secret_basic') && methods.includes('client_secret_post')) {
      body.set('client_id', clientId);
      body.set('client_secret', clientSecret);
    } else {
      // RFC 6749 §2.3.1: form-encode both before the Basic encoding.
      const basic = Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64');
      headers.authorization = `Basic ${basic}`;
    }
    let response: Response;
    try {
      response = await fetch(metadata.token_endpoint, { method: 'POST', headers, body, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
    } catch (error) {
      this.options.log.warn({ err: error, provider: provider.config.name }, 'OIDC token endpoint unreachable');
      throw providerUnavailable(`The identity provider "${provider.config.name}" cannot be reached.`);
    }
    const json = (await response.json().catch(() => ({}))) as { id_token?: unknown; access_token?: unknown; error?: unknown };
    if (!response.ok || typeof json.id_token !== 'string') {
      this.options.log.info({ provider: provider.config.name, status: response.status, error: json.error }, 'OIDC code exchange refused');
      throw new FlowFailure('oidc_error', new HttpProblem(400, 'oidc_error', 'The identity provider refused the authorization code.'));
    }
    return { id_token: json.id_token, ...(typeof json.access_token === 'string' ? { access_token: json.access_token } : {}) };
  }

  private async verifyIdToken(provider: ProviderState, metadata: ProviderMetadata, idToken: string, nonce: string): Promise<JWTPayload> {
    const offered = metadata.id_token_signing_alg_values_supported ?? ['RS256'];
    const algorithms = ID_TOKEN_ALGORITHMS.filter((alg) => offered.includes(alg));
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(idToken, provider.jwks!, {
        issuer: metadata.issuer,
        audience: provider.config.clientId,
        algorithms,
        requiredClaims: ['sub', 'iat', 'exp'],
        clockTolerance: 60,
      }));
    } catch (error) {
      if (error instanceof joseErrors.JOSEError && !(error instanceof joseErrors.JWKSTimeout)) {
        this.options.log.warn({ provider: provider.config.name, code: error.code }, 'OIDC ID token rejected');
        throw new FlowFailure('oidc_error', new HttpProblem(400, 'oidc_error', 'The ID token from the identity provider is not valid.'));
      }
      throw providerUnavailable(`The identity provider "${provider.config.name}" cannot be reached.`);
    }
    // OIDC Core §3.1.3.7: several audiences need `azp` naming this client.
    if (Array.isArray(payload.aud) && payload.aud.length > 1 && payload.azp !== provider.config.clientId) {
      throw new FlowFailure('oidc_error', new HttpProblem(400, 'oidc_error', 'The ID token was issued to another client.'));
    }
    if (typeof payload.nonce !== 'string' || !constantTimeEqual(payload.nonce, nonce)) {
      throw new FlowFailure('oidc_nonce_mismatch', new HttpProblem(400, 'invalid_nonce', 'The ID token does not belong to this sign-in.'));
    }
    return payload;
  }

  /** Email and name, from the ID token or else from the UserInfo endpoint (same `sub` required). */
  private async profile(metadata: ProviderMetadata, claims: JWTPayload, accessToken: string | undefined): Promise<{ email?: string; emailVerified: boolean; name?: string }> {
    let source: Record<string, unknown> = claims;
    if (typeof claims.email !== 'string' && metadata.userinfo_endpoint && accessToken) {
      try {
        const response = await fetch(metadata.userinfo_endpoint, { headers: { authorization: `Bearer ${accessToken}`, accept: 'application/json' }, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
        const info = (await response.json()) as Record<string, unknown>;
        if (response.ok && info.sub === claims.sub) source = { ...claims, ...info };
      } catch (error) {
        this.options.log.warn({ err: error }, 'OIDC userinfo failed');
      }
    }
    const normalized = typeof source.email === 'string' && /^[^\s@]+@[^\s@]+$/.test(source.email) ? normalizeEmail(source.email) : undefined;
    // Checked once lower-cased: that can make it longer ("İ" is two characters then).
    const email = normalized !== undefined && normalized.length <= 254 ? normalized : undefined;
    const name = typeof source.name === 'string' && source.name.trim() ? source.name.trim().slice(0, 200) : undefined;
    return { ...(email ? { email } : {}), emailVerified: source.email_verified === true || source.email_verified === 'true', ...(name ? { name } : {}) };
  }

  /** Finds the linked account, else the account with the same verified email (and links it), else creates one. */
  private async signIn(provider: string, subject: string, profile: { email?: string; emailVerified: boolean; name?: string }, origin: RequestOrigin): Promise<SignedInView> {
    const accounts = this.options.accounts;
    const users = accounts.repository;
    const readAt = new Date();
    const verifiedEmail = profile.emailVerified ? profile.email : undefined;
    const linked = await this.flows.identity(provider, subject);
    let user = linked ? await users.byId(linked.userId) : undefined;
    if (!user) {
      if (!verifiedEmail) {
        throw new FlowFailure('oidc_error', new HttpProblem(400, 'email_not_verified', 'The identity provider did not share a verified email address.'), profile.email ? { email: profile.email } : {});
      }
      user = await this.options.db.transaction(async (tx) => {
        let existing = await users.byEmail(verifiedEmail, tx);
        // A password account whose email nobody has verified may have been registered by anyone
        // (account pre-hijacking): linking would hand the provider's user an account whose
        // password, sessions and keys someone else may hold. Only an account a provider has
        // already vouched for, or one without a password, is linked by email.
        if (existing?.passwordHash && !(await this.flows.hasIdentity(existing.id, tx))) {
          throw new FlowFailure(
            'oidc_error',
            new HttpProblem(409, 'account_exists', 'An account with this email signs in with a password; sign in with it. An identity provider is not linked to an account whose email was never verified.'),
            { email: verifiedEmail, userId: existing.id },
          );
        }
        if (!existing) {
          const role = accounts.roleFor(verifiedEmail);
          const created = await users.insert({ email: verifiedEmail, name: profile.name ?? null, passwordHash: null, role }, tx);
          if (created) {
            await this.options.publish(
              tx,
              createEvent(EVENTS.authUserRegistered, { actor: actorOf(origin), userId: created.id, email: verifiedEmail, name: created.name, role, method: 'oidc', oidcProvider: provider }),
            );
          }
          existing = await users.byEmail(verifiedEmail, tx);
        }
        await this.flows.link({ provider, subject, userId: existing!.id, email: verifiedEmail }, tx);
        return existing!;
      });
    } else {
      await this.flows.touchIdentity(provider, subject, profile.email ?? null);
    }
    if (user.disabledAt) {
      throw new FlowFailure('account_disabled', accountDisabled(), { userId: user.id, ...(profile.email ? { email: profile.email } : {}) });
    }
    // ADMIN_EMAILS applies to OIDC sign-ins of existing accounts too (the email is verified here).
    if (verifiedEmail && verifiedEmail === user.email && user.role !== 'admin' && accounts.roleFor(verifiedEmail) === 'admin') {
      const promoted = user;
      await this.options.db.transaction(async (tx) => {
        await users.setRole(promoted.id, 'admin', tx);
        await this.options.publish(tx, createEvent(EVENTS.authUserUpdated, { actor: actorOf(origin, promoted.id), userId: promoted.id, changes: { role: 'admin' } }));
      });
      user = { ...user, role: 'admin' };
    }
    if (user.mfaEnabled) throw await this.mfaChallenge(provider, user);
    try {
      return await accounts.signIn(user, { method: 'oidc', oidcProvider: provider }, origin, { readAt });
    } catch (error) {
      // Two-factor sign-in was turned on since the account was read: it is asked for all the same.
      if (error instanceof HttpProblem && error.code === 'mfa_required') throw await this.mfaChallenge(provider, user);
      throw error;
    }
  }

  /** Stores a challenge for the second factor; the failure that answers it (401 `mfa_required` with its `mfaToken`). */
  private async mfaChallenge(provider: string, user: { id: string; email: string }): Promise<FlowFailure> {
    const mfaToken = b64url(randomBytes(32));
    await this.flows.saveMfaChallenge({
      tokenHash: sha256Hex(mfaToken),
      userId: user.id,
      provider,
      expiresAt: new Date(Date.now() + MFA_CHALLENGE_TTL_SECONDS * 1000),
    });
    return new FlowFailure(
      'mfa_required',
      new HttpProblem(401, 'mfa_required', 'This account has two-factor sign-in: send mfaToken with a TOTP code or a recovery code to POST /api/v1/auth/oauth/mfa.', {
        extensions: { mfaToken, expiresIn: MFA_CHALLENGE_TTL_SECONDS },
      }),
      { userId: user.id, email: user.email },
    );
  }

  /**
   * Finishes an OIDC sign-in that waits for the second factor. Wrong codes count against the
   * account and the client address as for password sign-in, and each try spends one of the
   * challenge's five (in one statement, so concurrent tries cannot share one); the challenge is
   * deleted by the try that succeeds. A throttled or failed try for another reason spends none
   * and leaves the challenge as it was.
   */
  async finishWithMfa(input: { mfaToken: string; mfaCode: string }, origin: RequestOrigin): Promise<SignedInView> {
    const tokenHash = sha256Hex(input.mfaToken);
    const readAt = new Date();
    const challenge = await this.flows.mfaChallenge(tokenHash);
    const accounts = this.options.accounts;
    const user = challenge && (await accounts.repository.byId(challenge.userId));
    if (!challenge || !user) throw invalidMfaToken();
    const failed = (reason: AuthLoginFailedData['reason']) =>
      accounts.loginFailed({ method: 'oidc', oidcProvider: challenge.provider, reason, userId: user.id, email: user.email }, origin);
    const counted = await accounts.countSignInTry(user.email, origin);
    if ('throttledForSeconds' in counted) {
      await failed('throttled');
      throw problems.rateLimited(counted.throttledForSeconds);
    }
    const { handBack } = counted;
    if (user.disabledAt) {
      await handBack(false);
      await failed('account_disabled');
      throw accountDisabled();
    }
    if (!(await this.flows.spendMfaAttempt(tokenHash, MFA_CHALLENGE_ATTEMPTS))) {
      await handBack(false);
      throw invalidMfaToken();
    }
    const mfaMethod = await this.options.mfa.verifyForLogin(user.id, input.mfaCode);
    if (!mfaMethod) {
      await failed('invalid_mfa_code');
      throw new HttpProblem(401, 'invalid_mfa_code', 'The two-factor code is not valid (or was already used).');
    }
    if (!(await this.flows.finishMfaChallenge(tokenHash))) {
      await handBack(false);
      throw invalidMfaToken();
    }
    await handBack(true);
    return accounts.signIn(user, { method: 'oidc', oidcProvider: challenge.provider, mfaMethod }, origin, { readAt });
  }
}
