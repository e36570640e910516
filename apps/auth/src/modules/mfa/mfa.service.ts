import { createEvent, EVENTS } from '@vivier/contracts';
import type { FastifyBaseLogger } from 'fastify';
import type { Executor, Publish } from '@vivier/messaging';
import { HttpProblem, problems, type Identity } from '@vivier/service-kit';
import type { AuthDatabase } from '../../database';
import type { SecretBox } from '../../security/secret-box';
import { sha256Hex } from '../../security/opaque-token';
import { accountsRepository } from '../accounts/accounts.repository';
import { actorOf, auditedFailures, type RequestOrigin } from '../audit/audit.service';
import type { SessionsService } from '../sessions/sessions.service';
import { reverifyKey, type AttemptLimiter } from '../throttling/throttling.service';
import { mfaRepository, type MfaRepository, type TotpFactorRow } from './mfa.repository';
import { base32Encode, matchingStep, newRecoveryCode, newTotpSecret, normalizeRecoveryCode, otpauthUrl, timeStep } from './totp.service';

export const RECOVERY_CODE_COUNT = 10;

export type MfaMethodUsed = 'totp' | 'recovery_code';

export interface MfaServiceOptions {
  db: AuthDatabase;
  publish: Publish;
  box: SecretBox;
  sessions: SessionsService;
  totpIssuer: string;
  limiter: AttemptLimiter;
  /**
   * Wrong codes to enable or disable MFA count against the account's sign-in failures (the
   * counter a wrong password or MFA code at sign-in uses): a stolen session cannot guess its way
   * to turning MFA off.
   */
  codeAttempts: { limit: number; windowSeconds: number };
  log: FastifyBaseLogger;
}

const invalidCode = () => new HttpProblem(400, 'invalid_mfa_code', 'The code is not valid (or was already used).');

/**
 * TOTP second factor: setup stores a pending secret (sealed), enabling needs a valid code and
 * issues single-use recovery codes (stored as SHA-256), disabling needs a valid code too. Turning
 * MFA on or off ends the user's other sessions and invalidates the access tokens issued so far.
 */
export class MfaService {
  private readonly mfa: MfaRepository;
  private readonly accounts;

  constructor(private readonly options: MfaServiceOptions) {
    this.mfa = mfaRepository(options.db);
    this.accounts = accountsRepository(options.db);
  }

  async setup(identity: Identity): Promise<{ secret: string; otpauthUrl: string }> {
    const user = await this.accounts.byId(identity.sub);
    if (!user) throw problems.unauthorized();
    if (user.mfaEnabled) throw problems.conflict('mfa_already_enabled', 'Two-factor sign-in is already on; disable it first.');
    const secret = newTotpSecret();
    const saved = await this.mfa.savePending(user.id, this.options.box.seal(secret, `totp:${user.id}`));
    if (!saved) throw problems.conflict('mfa_already_enabled', 'Two-factor sign-in is already on; disable it first.');
    const encoded = base32Encode(secret);
    return { secret: encoded, otpauthUrl: otpauthUrl(encoded, user.email, this.options.totpIssuer) };
  }

  /**
   * Runs `check` (which throws invalidCode() for a wrong code) as one counted attempt: over the
   * limit it is refused with 429 before the code is looked at; a right code clears the counter, a
   * failure for any other reason hands the attempt back.
   */
  private async counted<T>(identity: Identity, operation: 'mfa_enable' | 'mfa_disable', origin: RequestOrigin, check: () => Promise<T>): Promise<T> {
    const user = await this.accounts.byId(identity.sub);
    if (!user) throw problems.unauthorized();
    // A wrong code and a throttled attempt are audited (QUALITY-BAR 10); setup mistakes are not security events.
    return auditedFailures(this.options, { operation, userId: user.id }, { rate_limited: 'throttled', invalid_mfa_code: 'invalid_mfa_code' }, origin, () =>
      this.countedFor(user, check),
    );
  }

  private async countedFor<T>(user: { id: string }, check: () => Promise<T>): Promise<T> {
    const key = reverifyKey(user.id);
    const { limiter, codeAttempts } = this.options;
    const [counter] = await limiter.take([{ key, limit: codeAttempts.limit, windowSeconds: codeAttempts.windowSeconds }]);
    if (counter!.exceeded) throw problems.rateLimited(counter!.resetInMs / 1000);
    try {
      const result = await check();
      await limiter.release([{ key, reset: true }]);
      return result;
    } catch (error) {
      if (!(error instanceof HttpProblem && error.code === 'invalid_mfa_code')) await limiter.release([{ key }]);
      throw error;
    }
  }

  async enable(identity: Identity, code: string, origin: RequestOrigin): Promise<{ recoveryCodes: string[] }> {
    return this.counted(identity, 'mfa_enable', origin, () => this.enableWith(identity, code, origin));
  }

  private async enableWith(identity: Identity, code: string, origin: RequestOrigin): Promise<{ recoveryCodes: string[] }> {
    const now = new Date();
    const recoveryCodes = Array.from({ length: RECOVERY_CODE_COUNT }, newRecoveryCode);
    const revoked = await this.options.db.transaction(async (tx) => {
      // The user's row first, as a sign-in under way holds it (AccountsService.signIn): it ends before
      // this revokes every session, or sees MFA on.
      await this.accounts.lockById(identity.sub, tx);
      const factor = await this.mfa.factor(identity.sub, tx);
      if (!factor) throw problems.badRequest('mfa_not_set_up', 'Call /mfa/totp/setup first.');
      if (factor.enabledAt) throw problems.conflict('mfa_already_enabled', 'Two-factor sign-in is already on.');
      const step = this.matchTotp(factor, code);
      if (step === undefined || !(await this.mfa.consumeStep(identity.sub, step, { enable: true }, tx))) throw invalidCode();
      await this.mfa.replaceRecoveryCodes(identity.sub, recoveryCodes.map((c) => sha256Hex(normalizeRecoveryCode(c)!)), tx);
      const actor = actorOf(origin, identity.sub);
      await this.options.publish(tx, createEvent(EVENTS.authMfaEnabled, { actor, userId: identity.sub, method: 'totp', recoveryCodesIssued: recoveryCodes.length }));
      return this.options.sessions.revokeAllOfUser(tx, identity.sub, 'revoked_by_user', actor, now, identity.sid);
    });
    await this.options.sessions.notifyUserWide(identity.sub, revoked, now);
    return { recoveryCodes };
  }

  async disable(identity: Identity, code: string, origin: RequestOrigin): Promise<void> {
    return this.counted(identity, 'mfa_disable', origin, () => this.disableWith(identity, code, origin));
  }

  private async disableWith(identity: Identity, code: string, origin: RequestOrigin): Promise<void> {
    const now = new Date();
    const revoked = await this.options.db.transaction(async (tx) => {
      const factor = await this.mfa.factor(identity.sub, tx);
      if (!factor?.enabledAt) throw problems.badRequest('mfa_not_enabled', 'Two-factor sign-in is not on.');
      if (!(await this.consume(tx, factor, code))) throw invalidCode();
      await this.mfa.deleteFactor(identity.sub, tx);
      const actor = actorOf(origin, identity.sub);
      await this.options.publish(tx, createEvent(EVENTS.authMfaDisabled, { actor, userId: identity.sub, method: 'totp' }));
      return this.options.sessions.revokeAllOfUser(tx, identity.sub, 'revoked_by_user', actor, now, identity.sid);
    });
    await this.options.sessions.notifyUserWide(identity.sub, revoked, now);
  }

  /** At sign-in: checks and uses up a TOTP or recovery code of a user whose MFA is on. */
  async verifyForLogin(userId: string, code: string): Promise<MfaMethodUsed | undefined> {
    const factor = await this.mfa.factor(userId);
    if (!factor?.enabledAt) return undefined;
    return this.consume(this.options.db, factor, code);
  }

  private async consume(tx: Executor, factor: TotpFactorRow, code: string): Promise<MfaMethodUsed | undefined> {
    const step = this.matchTotp(factor, code);
    if (step !== undefined) return (await this.mfa.consumeStep(factor.userId, step, {}, tx)) ? 'totp' : undefined;
    const recovery = normalizeRecoveryCode(code);
    if (recovery && (await this.mfa.consumeRecoveryCode(factor.userId, sha256Hex(recovery), tx))) return 'recovery_code';
    return undefined;
  }

  private matchTotp(factor: TotpFactorRow, code: string): number | undefined {
    const trimmed = code.replace(/\s/g, '');
    if (!/^\d{6}$/.test(trimmed)) return undefined;
    const secret = this.options.box.open(factor.secretEncrypted, `totp:${factor.userId}`);
    return matchingStep(secret, trimmed, timeStep(), factor.lastUsedStep);
  }
}
