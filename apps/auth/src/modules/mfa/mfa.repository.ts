import { and, eq, isNull, lt, or } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { authTables } from '@vivier/db-auth';

const { totpFactors, recoveryCodes } = authTables;

export type TotpFactorRow = typeof totpFactors.$inferSelect;

/** TOTP factors and recovery codes (auth.totp_factors, auth.recovery_codes). */
export function mfaRepository(db: Executor) {
  return {
    async factor(userId: string, tx: Executor = db): Promise<TotpFactorRow | undefined> {
      const rows = await tx.select().from(totpFactors).where(eq(totpFactors.userId, userId));
      return rows[0];
    },

    /** Stores a new pending secret; false when MFA is already on (the secret is kept then). */
    async savePending(userId: string, secretEncrypted: string, tx: Executor = db): Promise<boolean> {
      const rows = await tx
        .insert(totpFactors)
        .values({ userId, secretEncrypted })
        .onConflictDoUpdate({
          target: totpFactors.userId,
          set: { secretEncrypted, createdAt: new Date(), lastUsedStep: null },
          setWhere: isNull(totpFactors.enabledAt),
        })
        .returning({ userId: totpFactors.userId });
      return rows.length > 0;
    },

    /**
     * Records `step` as the last accepted one, atomically and only if it is later than the last:
     * of two concurrent uses of one code, one wins. `enable` also turns MFA on.
     */
    async consumeStep(userId: string, step: number, options: { enable?: boolean } = {}, tx: Executor = db): Promise<boolean> {
      const rows = await tx
        .update(totpFactors)
        .set(options.enable ? { lastUsedStep: step, enabledAt: new Date() } : { lastUsedStep: step })
        .where(and(eq(totpFactors.userId, userId), or(isNull(totpFactors.lastUsedStep), lt(totpFactors.lastUsedStep, step))))
        .returning({ userId: totpFactors.userId });
      return rows.length > 0;
    },

    async deleteFactor(userId: string, tx: Executor = db): Promise<void> {
      await tx.delete(totpFactors).where(eq(totpFactors.userId, userId));
      await tx.delete(recoveryCodes).where(eq(recoveryCodes.userId, userId));
    },

    async replaceRecoveryCodes(userId: string, codeHashes: string[], tx: Executor = db): Promise<void> {
      await tx.delete(recoveryCodes).where(eq(recoveryCodes.userId, userId));
      await tx.insert(recoveryCodes).values(codeHashes.map((codeHash) => ({ userId, codeHash })));
    },

    /** Uses a recovery code once: true only for the first use of an issued code. */
    async consumeRecoveryCode(userId: string, codeHash: string, tx: Executor = db): Promise<boolean> {
      const rows = await tx
        .update(recoveryCodes)
        .set({ usedAt: new Date() })
        .where(and(eq(recoveryCodes.userId, userId), eq(recoveryCodes.codeHash, codeHash), isNull(recoveryCodes.usedAt)))
        .returning({ id: recoveryCodes.id });
      return rows.length > 0;
    },
  };
}

export type MfaRepository = ReturnType<typeof mfaRepository>;
