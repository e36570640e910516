import { and, eq, isNotNull, isNull, sql } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { authTables } from '@vivier/db-auth';

const { users, totpFactors } = authTables;

export type UserRow = typeof users.$inferSelect;
export type UserWithMfa = UserRow & { mfaEnabled: boolean };

const withMfa = {
  id: users.id,
  email: users.email,
  name: users.name,
  passwordHash: users.passwordHash,
  role: users.role,
  disabledAt: users.disabledAt,
  createdAt: users.createdAt,
  updatedAt: users.updatedAt,
  mfaEnabled: sql<boolean>`(${totpFactors.enabledAt} is not null)`.as('mfa_enabled'),
};

/** Accounts (auth.users). */
export function accountsRepository(db: Executor) {
  return {
    async byEmail(email: string, tx: Executor = db): Promise<UserWithMfa | undefined> {
      const rows = await tx.select(withMfa).from(users).leftJoin(totpFactors, eq(totpFactors.userId, users.id)).where(eq(users.email, email));
      return rows[0];
    },

    async byId(id: string, tx: Executor = db): Promise<UserWithMfa | undefined> {
      const rows = await tx.select(withMfa).from(users).leftJoin(totpFactors, eq(totpFactors.userId, users.id)).where(eq(users.id, id));
      return rows[0];
    },

    /** Locks the user's row for the rest of the transaction. */
    async lockById(id: string, tx: Executor): Promise<UserRow | undefined> {
      const rows = await tx.select().from(users).where(eq(users.id, id)).for('update');
      return rows[0];
    },

    /**
     * The user's credentials as they are now, the user's row share-locked for the rest of the
     * transaction: a change of password, MFA or status (each takes the row for update first) waits
     * for a sign-in under way, or the sign-in sees it.
     */
    async credentialsForSignIn(id: string, tx: Executor): Promise<{ passwordHash: string | null; disabledAt: Date | null; mfaEnabled: boolean } | undefined> {
      // Only the user's row is locked (`of u`): the factor's row may not exist.
      const result = (await tx.execute(sql`
        select u.password_hash as "passwordHash", u.disabled_at as "disabledAt", (f.enabled_at is not null) as "mfaEnabled"
        from auth.users u left join auth.totp_factors f on f.user_id = u.id
        where u.id = ${id}
        for share of u`)) as unknown as { rows: Array<{ passwordHash: string | null; disabledAt: Date | null; mfaEnabled: boolean }> };
      return result.rows[0];
    },

    /** Inserts, or returns undefined when the email is taken. */
    async insert(row: { email: string; name: string | null; passwordHash: string | null; role: 'user' | 'admin' }, tx: Executor = db): Promise<UserRow | undefined> {
      const rows = await tx.insert(users).values(row).onConflictDoNothing({ target: users.email }).returning();
      return rows[0];
    },

    /** Replaces the hash only if it is still `previous`; false when it changed meanwhile. */
    async replacePasswordHash(id: string, previous: string, passwordHash: string, tx: Executor = db): Promise<boolean> {
      const rows = await tx
        .update(users)
        .set({ passwordHash, updatedAt: new Date() })
        .where(and(eq(users.id, id), eq(users.passwordHash, previous)))
        .returning({ id: users.id });
      return rows.length > 0;
    },

    async setPasswordHash(id: string, passwordHash: string, tx: Executor = db): Promise<void> {
      await tx.update(users).set({ passwordHash, updatedAt: new Date() }).where(eq(users.id, id));
    },

    async setRole(id: string, role: 'user' | 'admin', tx: Executor = db): Promise<boolean> {
      const rows = await tx.update(users).set({ role, updatedAt: new Date() }).where(eq(users.id, id)).returning({ id: users.id });
      return rows.length > 0;
    },

    /** Marks the user disabled; false when unknown or already disabled. */
    async disable(id: string, at: Date, tx: Executor = db): Promise<boolean> {
      const rows = await tx
        .update(users)
        .set({ disabledAt: at, updatedAt: at })
        .where(and(eq(users.id, id), isNull(users.disabledAt)))
        .returning({ id: users.id });
      return rows.length > 0;
    },

    /** Enables the user; false when unknown or not disabled. */
    async enable(id: string, tx: Executor = db): Promise<boolean> {
      const rows = await tx
        .update(users)
        .set({ disabledAt: null, updatedAt: new Date() })
        .where(and(eq(users.id, id), isNotNull(users.disabledAt)))
        .returning({ id: users.id });
      return rows.length > 0;
    },
  };
}

export type AccountsRepository = ReturnType<typeof accountsRepository>;
