import { createEvent, EVENTS, type AuthLoginFailedData } from '@vivier/contracts';
import type { Publish } from '@vivier/messaging';
import { HttpProblem, ipPartition, problems, type Identity } from '@vivier/service-kit';
import type { FastifyBaseLogger, FastifyRequest } from 'fastify';
import type { AuthDatabase } from '../../database';
import type { SignedInView, UserView } from '../../http.schema';
import { actorOf, auditedFailures, type RequestOrigin } from '../audit/audit.service';
import type { MfaService } from '../mfa/mfa.service';
import { checkPasswordPolicy, type PasswordHasher } from '../passwords/passwords.service';
import type { SessionsService } from '../sessions/sessions.service';
import { hashedKey, reverifyKey, type AttemptLimiter } from '../throttling/throttling.service';
import { accountsRepository, type AccountsRepository, type UserWithMfa } from './accounts.repository';

export interface AccountsServiceOptions {
  db: AuthDatabase;
  publish: Publish;
  passwords: PasswordHasher;
  limiter: AttemptLimiter;
  sessions: SessionsService;
  mfa: MfaService;
  adminEmails: Set<string>;
  log: FastifyBaseLogger;
  limits: {
    registerPerIp: number;
    registerWindowSeconds: number;
    loginFailuresPerAccount: number;
    loginFailuresPerIp: number;
    loginWindowSeconds: number;
  };
}

/** The refusals of signIn (a change that committed since the account was read), as login.failed reasons. */
const SIGN_IN_REFUSALS: Record<string, 'account_disabled' | 'invalid_password' | 'mfa_required'> = {
  account_disabled: 'account_disabled',
  invalid_credentials: 'invalid_password',
  mfa_required: 'mfa_required',
};

export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

/**
 * An email as given at registration or sign-in, normalized, and refused (400) when lower-casing
 * made it longer than an address may be ("İ" becomes two characters): no account has it, and the
 * events that carry it would refuse it.
 */
function emailFrom(raw: string): string {
  const email = normalizeEmail(raw);
  if (email.length > 254) {
    throw problems.validation('The email address is too long.', [{ path: 'body/email', message: 'must be at most 254 characters once lower-cased' }]);
  }
  return email;
}

export function userView(user: Pick<UserWithMfa, 'id' | 'email' | 'name' | 'role' | 'createdAt'> & { mfaEnabled?: boolean }): UserView {
  return { id: user.id, email: user.email, name: user.name, role: user.role, mfaEnabled: user.mfaEnabled ?? false, createdAt: user.createdAt.toISOString() };
}

export const accountDisabled = () => new HttpProblem(403, 'account_disabled', 'This account is disabled.');

// One answer for an unknown email and a wrong password: same status, same body.
const invalidCredentials = () => new HttpProblem(401, 'invalid_credentials', 'The email or password is incorrect.');

/**
 * Accounts: registration, password sign-in (argon2id, throttled per account and per IP, with
 * the second factor when it is on), the caller's profile and password.
 */
export class AccountsService {
  private readonly accounts: AccountsRepository;

  constructor(private readonly options: AccountsServiceOptions) {
    this.accounts = accountsRepository(options.db);
  }

  get repository(): AccountsRepository {
    return this.accounts;
  }

  roleFor(email: string): 'user' | 'admin' {
    return this.options.adminEmails.has(normalizeEmail(email)) ? 'admin' : 'user';
  }

  /** A refused registration (throttled, email taken, password refused) is audited. */
  async register(input: { email: string; password: string; name?: string }, origin: RequestOrigin): Promise<SignedInView> {
    const email = emailFrom(input.email);
    return auditedFailures(
      this.options,
      { operation: 'register', email },
      { rate_limited: 'throttled', email_taken: 'email_taken', weak_password: 'weak_password', validation_failed: 'weak_password' },
      origin,
      () => this.registerAs(email, input, origin),
    );
  }

  private async registerAs(email: string, input: { password: string; name?: string }, origin: RequestOrigin): Promise<SignedInView> {
    const { limits, limiter } = this.options;
    const [perIp] = await limiter.take([{ key: `register:ip:${ipPartition(origin.ip)}`, limit: limits.registerPerIp, windowSeconds: limits.registerWindowSeconds }]);
    if (perIp!.exceeded) {
      this.options.log.info({ ip: origin.ip }, 'registration rate limited');
      throw problems.rateLimited(perIp!.resetInMs / 1000);
    }
    checkPasswordPolicy(input.password, email);
    const passwordHash = await this.options.passwords.hash(input.password);
    const name = input.name?.trim() || null;
    const role = this.roleFor(email);
    const created = await this.options.db.transaction(async (tx) => {
      const user = await this.accounts.insert({ email, name, passwordHash, role }, tx);
      if (!user) return undefined;
      const session = await this.options.sessions.start(tx, { userId: user.id, method: 'password', origin });
      const actor = actorOf(origin);
      await this.options.publish(tx, [
        createEvent(EVENTS.authUserRegistered, { actor, userId: user.id, email, name, role, method: 'password' }),
        createEvent(EVENTS.authUserLoggedIn, { actor: actorOf(origin, user.id), userId: user.id, sessionId: session.sessionId, method: 'password' }),
      ]);
      return { user, session };
    });
    if (!created) throw problems.conflict('email_taken', 'An account with this email already exists.');
    const tokens = await this.options.sessions.tokenPair(created.user, created.session.sessionId, created.session.refreshToken);
    return { user: userView(created.user), ...tokens };
  }

  /**
   * Counts a sign-in try against the account and the client address, before the work (parallel
   * guesses cannot slip past): the seconds until it may be tried again when either is over its
   * limit, else `handBack`, for a try whose credentials were right (`reset` clears the account's count).
   */
  async countSignInTry(email: string, origin: RequestOrigin): Promise<{ throttledForSeconds: number } | { handBack(reset: boolean): Promise<void> }> {
    const { limits, limiter } = this.options;
    const accountKey = hashedKey('login:account', email);
    const ipKey = `login:ip:${ipPartition(origin.ip)}`;
    const counters = await limiter.take([
      { key: accountKey, limit: limits.loginFailuresPerAccount, windowSeconds: limits.loginWindowSeconds },
      { key: ipKey, limit: limits.loginFailuresPerIp, windowSeconds: limits.loginWindowSeconds },
    ]);
    const exceeded = counters.filter((c) => c.exceeded);
    if (exceeded.length > 0) return { throttledForSeconds: Math.max(...exceeded.map((c) => c.resetInMs)) / 1000 };
    return { handBack: (reset: boolean) => limiter.release([{ key: accountKey, reset }, { key: ipKey }]) };
  }

  async login(input: { email: string; password: string; mfaCode?: string }, origin: RequestOrigin): Promise<SignedInView> {
    const { passwords } = this.options;
    const email = emailFrom(input.email);
    const counted = await this.countSignInTry(email, origin);
    if ('throttledForSeconds' in counted) {
      await this.loginFailed({ email, reason: 'throttled' }, origin);
      throw problems.rateLimited(counted.throttledForSeconds);
    }
    const { handBack } = counted;

    const readAt = new Date();
    const user = await this.accounts.byEmail(email);
    if (!user?.passwordHash) {
      await passwords.verifyDummy(input.password);
      await this.loginFailed({ email, ...(user ? { userId: user.id } : {}), reason: user ? 'invalid_password' : 'unknown_email' }, origin);
      throw invalidCredentials();
    }
    if (!(await passwords.verify(user.passwordHash, input.password))) {
      await this.loginFailed({ email, userId: user.id, reason: 'invalid_password' }, origin);
      throw invalidCredentials();
    }
    if (user.disabledAt) {
      await handBack(false);
      await this.loginFailed({ email, userId: user.id, reason: 'account_disabled' }, origin);
      throw accountDisabled();
    }
    let mfaMethod: 'totp' | 'recovery_code' | undefined;
    if (user.mfaEnabled) {
      if (!input.mfaCode) {
        await handBack(false);
        await this.loginFailed({ email, userId: user.id, reason: 'mfa_required' }, origin);
        throw new HttpProblem(401, 'mfa_required', 'This account has two-factor sign-in: send mfaCode (a TOTP code or a recovery code).');
      }
      mfaMethod = await this.options.mfa.verifyForLogin(user.id, input.mfaCode);
      if (!mfaMethod) {
        await this.loginFailed({ email, userId: user.id, reason: 'invalid_mfa_code' }, origin);
        throw new HttpProblem(401, 'invalid_mfa_code', 'The two-factor code is not valid (or was already used).');
      }
    }
    await handBack(true);
    let passwordHash = user.passwordHash;
    if (passwords.needsRehash(passwordHash)) {
      const rehashed = await passwords.hash(input.password);
      // Only over the hash this sign-in checked: never over a password changed meanwhile.
      if (await this.accounts.replacePasswordHash(user.id, passwordHash, rehashed)) passwordHash = rehashed;
      else {
        // Changed since it was read: another sign-in rehashed it (the same password), or the
        // password was changed. Checked again against what is there now.
        const current = await this.accounts.byId(user.id);
        if (!current?.passwordHash || !(await passwords.verify(current.passwordHash, input.password))) {
          await this.loginFailed({ email, userId: user.id, reason: 'invalid_password' }, origin);
          throw invalidCredentials();
        }
        passwordHash = current.passwordHash;
      }
    }
    try {
      return await this.signIn(user, { method: 'password', ...(mfaMethod ? { mfaMethod } : {}) }, origin, { passwordHash, readAt });
    } catch (error) {
      // Refused under the user's row lock (a change committed since the account was read): a
      // failed sign-in like any other, audited with its reason.
      const reason = SIGN_IN_REFUSALS[(error as { code?: string }).code ?? ''];
      if (reason) await this.loginFailed({ email, userId: user.id, reason }, origin);
      throw error;
    }
  }

  /**
   * Starts a session for a user who proved who they are, with its `user.logged_in` event. The proof
   * was checked against the account as it was read; it is checked again under the user's row lock,
   * so a password or MFA change, or a disabling, that commits in between either revokes this
   * session (it waits for this transaction) or refuses it (this one sees the change).
   */
  async signIn(
    user: Pick<UserWithMfa, 'id' | 'email' | 'name' | 'role' | 'createdAt' | 'mfaEnabled'>,
    how: { method: 'password' | 'oidc'; oidcProvider?: string; mfaMethod?: 'totp' | 'recovery_code' },
    origin: RequestOrigin,
    verified: { passwordHash?: string | null; readAt?: Date } = {},
  ): Promise<SignedInView> {
    const session = await this.options.db.transaction(async (tx) => {
      const now = await this.accounts.credentialsForSignIn(user.id, tx);
      if (!now || now.disabledAt) throw accountDisabled();
      const passwordChanged = verified.passwordHash !== undefined && now.passwordHash !== verified.passwordHash;
      if (passwordChanged) throw invalidCredentials();
      if (now.mfaEnabled && !how.mfaMethod) throw new HttpProblem(401, 'mfa_required', 'Two-factor sign-in was turned on for this account meanwhile: sign in again with a code.');
      const started = await this.options.sessions.start(tx, { userId: user.id, method: how.method, ...(how.oidcProvider ? { oidcProvider: how.oidcProvider } : {}), origin });
      await this.options.publish(
        tx,
        createEvent(EVENTS.authUserLoggedIn, { actor: actorOf(origin, user.id), userId: user.id, sessionId: started.sessionId, ...how }),
      );
      return started;
    });
    const tokens = await this.options.sessions.tokenPair(user, session.sessionId, session.refreshToken, verified.readAt);
    return { user: userView(user), ...tokens };
  }

  /** A failed sign-in, as an event in its own short transaction (nothing else changes). */
  async loginFailed(data: Omit<AuthLoginFailedData, 'actor' | 'method'> & { method?: AuthLoginFailedData['method'] }, origin: RequestOrigin): Promise<void> {
    const event = createEvent(EVENTS.authLoginFailed, { actor: actorOf(origin), method: 'password', ...data });
    await this.options.db.transaction((tx) => this.options.publish(tx, event));
  }

  async me(identity: Identity): Promise<UserView> {
    const user = await this.accounts.byId(identity.sub);
    if (!user) throw problems.unauthorized('invalid_token', 'The account no longer exists.');
    if (user.disabledAt) throw accountDisabled();
    return userView(user);
  }

  /** Changes the caller's password; other sessions end and earlier access tokens stop working. */
  async changePassword(identity: Identity, input: { currentPassword?: string; newPassword: string }, origin: RequestOrigin): Promise<void> {
    const user = await this.accounts.byId(identity.sub);
    if (!user) throw problems.unauthorized();
    await auditedFailures(
      this.options,
      { operation: 'password_change', userId: user.id },
      { rate_limited: 'throttled', invalid_credentials: 'invalid_password', weak_password: 'weak_password', validation_failed: 'weak_password' },
      origin,
      () => this.changePasswordOf(user, identity, input, origin),
    );
  }

  private async changePasswordOf(
    user: NonNullable<Awaited<ReturnType<AccountsRepository['byId']>>>,
    identity: Identity,
    input: { currentPassword?: string; newPassword: string },
    origin: RequestOrigin,
  ): Promise<void> {
    const { limits, limiter, passwords } = this.options;
    if (user.passwordHash) {
      const key = reverifyKey(user.id);
      const [counter] = await limiter.take([{ key, limit: limits.loginFailuresPerAccount, windowSeconds: limits.loginWindowSeconds }]);
      if (counter!.exceeded) throw problems.rateLimited(counter!.resetInMs / 1000);
      if (!input.currentPassword || !(await passwords.verify(user.passwordHash, input.currentPassword))) {
        throw new HttpProblem(400, 'invalid_credentials', 'The current password is incorrect.');
      }
      await limiter.release([{ key, reset: true }]);
    }
    checkPasswordPolicy(input.newPassword, user.email);
    const passwordHash = await passwords.hash(input.newPassword);
    const now = new Date();
    const revoked = await this.options.db.transaction(async (tx) => {
      await this.accounts.setPasswordHash(user.id, passwordHash, tx);
      const actor = actorOf(origin, user.id);
      await this.options.publish(tx, createEvent(EVENTS.authUserUpdated, { actor, userId: user.id, changes: { passwordChanged: true } }));
      return this.options.sessions.revokeAllOfUser(tx, user.id, 'password_changed', actor, now, identity.sid);
    });
    await this.options.sessions.notifyUserWide(user.id, revoked, now);
  }

  /**
   * preHandler for routes of a signed-in caller: the gateway vouched for the identity, and the
   * account must still be enabled and the session (when there is one) not revoked. Sensitive
   * routes (`apiKeys: false`) refuse API keys.
   */
  callerGuard(options: { apiKeys: boolean }) {
    return async (request: FastifyRequest): Promise<void> => {
      const identity = request.identity;
      if (!identity) throw problems.unauthorized();
      if (!options.apiKeys && identity.kind !== 'access_token') throw problems.forbidden('This needs a signed-in session; API keys cannot do it.');
      const user = await this.accounts.byId(identity.sub);
      if (!user) throw problems.unauthorized('invalid_token', 'The account no longer exists.');
      if (user.disabledAt) throw accountDisabled();
      if (identity.sid && !(await this.options.sessions.isActive(identity.sid))) {
        throw problems.unauthorized('invalid_token', 'This session has ended; sign in again.');
      }
    };
  }
}

