import { and, eq, gt, lt, sql } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { authTables } from '@vivier/db-auth';

const { oidcLoginFlows, oidcIdentities, oidcMfaChallenges } = authTables;

export type OidcLoginFlowRow = typeof oidcLoginFlows.$inferSelect;
export type OidcIdentityRow = typeof oidcIdentities.$inferSelect;
export type OidcMfaChallengeRow = typeof oidcMfaChallenges.$inferSelect;

/** OIDC sign-ins in flight and linked provider identities (auth.oidc_login_flows, auth.oidc_identities). */
export function oidcRepository(db: Executor) {
  return {
    async saveFlow(row: { stateHash: string; provider: string; secretsEncrypted: string; expiresAt: Date }, tx: Executor = db): Promise<void> {
      await tx.insert(oidcLoginFlows).values(row);
    },

    /** Takes a flow: it is deleted in the same statement, so a state works once. */
    async takeFlow(stateHash: string, tx: Executor = db): Promise<OidcLoginFlowRow | undefined> {
      const rows = await tx.delete(oidcLoginFlows).where(eq(oidcLoginFlows.stateHash, stateHash)).returning();
      return rows[0];
    },

    /** Deletes the flows and MFA challenges that expired before `now`. */
    async purgeExpiredFlows(now: Date, tx: Executor = db): Promise<void> {
      await tx.delete(oidcLoginFlows).where(lt(oidcLoginFlows.expiresAt, now));
      await tx.delete(oidcMfaChallenges).where(lt(oidcMfaChallenges.expiresAt, now));
    },

    async saveMfaChallenge(row: { tokenHash: string; userId: string; provider: string; expiresAt: Date }, tx: Executor = db): Promise<void> {
      await tx.insert(oidcMfaChallenges).values(row);
    },

    /** A challenge that has not expired. */
    async mfaChallenge(tokenHash: string, tx: Executor = db): Promise<OidcMfaChallengeRow | undefined> {
      const rows = await tx
        .select()
        .from(oidcMfaChallenges)
        .where(and(eq(oidcMfaChallenges.tokenHash, tokenHash), gt(oidcMfaChallenges.expiresAt, sql`now()`)));
      return rows[0];
    },

    /** Spends one of a challenge's `max` tries, in one statement (concurrent tries each spend one); false when none is left or it expired. */
    async spendMfaAttempt(tokenHash: string, max: number, tx: Executor = db): Promise<boolean> {
      const rows = await tx
        .update(oidcMfaChallenges)
        .set({ attempts: sql`${oidcMfaChallenges.attempts} + 1` })
        .where(and(eq(oidcMfaChallenges.tokenHash, tokenHash), lt(oidcMfaChallenges.attempts, max), gt(oidcMfaChallenges.expiresAt, sql`now()`)))
        .returning({ attempts: oidcMfaChallenges.attempts });
      return rows.length > 0;
    },

    /** Deletes a challenge that was answered; false if another try got there first. */
    async finishMfaChallenge(tokenHash: string, tx: Executor = db): Promise<boolean> {
      const rows = await tx.delete(oidcMfaChallenges).where(eq(oidcMfaChallenges.tokenHash, tokenHash)).returning({ tokenHash: oidcMfaChallenges.tokenHash });
      return rows.length > 0;
    },

    async identity(provider: string, subject: string, tx: Executor = db): Promise<OidcIdentityRow | undefined> {
      const rows = await tx
        .select()
        .from(oidcIdentities)
        .where(and(eq(oidcIdentities.provider, provider), eq(oidcIdentities.subject, subject)));
      return rows[0];
    },

    /** Whether any identity provider has vouched for this account (it has a linked identity). */
    async hasIdentity(userId: string, tx: Executor = db): Promise<boolean> {
      const rows = await tx.select({ userId: oidcIdentities.userId }).from(oidcIdentities).where(eq(oidcIdentities.userId, userId)).limit(1);
      return rows.length > 0;
    },

    async link(row: { provider: string; subject: string; userId: string; email: string | null }, tx: Executor = db): Promise<void> {
      await tx.insert(oidcIdentities).values(row).onConflictDoNothing();
    },

    async touchIdentity(provider: string, subject: string, email: string | null, tx: Executor = db): Promise<void> {
      await tx
        .update(oidcIdentities)
        .set({ lastLoginAt: new Date(), ...(email ? { email } : {}) })
        .where(and(eq(oidcIdentities.provider, provider), eq(oidcIdentities.subject, subject)));
    },
  };
}

export type OidcRepository = ReturnType<typeof oidcRepository>;
