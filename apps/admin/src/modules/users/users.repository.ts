import { and, count, eq, ne, sql, type SQL } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { adminTables } from '@vivier/db-admin';

const { users, userTotals, quotas } = adminTables;

export type Role = 'user' | 'admin';
export type UserStatus = 'active' | 'disabled';
export type UserRow = typeof users.$inferSelect;

/** A user with their activity totals and quota, as the list shows them. */
export interface UserWithTotals extends UserRow {
  chats: number;
  messages: number;
  tokensIn: number;
  tokensOut: number;
  lastActiveAt: Date | null;
  monthlyTokens: number | null;
}

export interface UserListFilter {
  /** Case-insensitive prefix of the email, of its domain or of the name. */
  q?: string;
  role?: Role;
  status?: UserStatus;
}

const escapeLike = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

const withTotals = {
  user: users,
  // A delete seen without its create (events from before this service existed) must not show as negative.
  chats: sql<number>`greatest(coalesce(${userTotals.chats}, 0), 0)`.mapWith(Number),
  messages: sql<number>`coalesce(${userTotals.messages}, 0)`.mapWith(Number),
  tokensIn: sql<number>`coalesce(${userTotals.tokensIn}, 0)`.mapWith(Number),
  tokensOut: sql<number>`coalesce(${userTotals.tokensOut}, 0)`.mapWith(Number),
  activityAt: userTotals.lastActiveAt,
  monthlyTokens: quotas.monthlyTokens,
};

type JoinedRow = { user: UserRow; chats: number; messages: number; tokensIn: number; tokensOut: number; activityAt: Date | null; monthlyTokens: number | null };

function flatten(row: JoinedRow): UserWithTotals {
  const { user, activityAt, ...totals } = row;
  // Active = signed in or used chat, whichever was last.
  const times = [user.lastLoginAt, activityAt].filter((t): t is Date => t !== null);
  const lastActiveAt = times.length > 0 ? new Date(Math.max(...times.map((t) => t.getTime()))) : null;
  return { ...user, ...totals, lastActiveAt };
}

/** admin.users (from auth.events and admin's own changes), joined with totals and quotas for reading. */
export function usersRepository(db: Executor) {
  return {
    async insertRegistered(row: { id: string; email: string; name: string | null; role: Role; createdAt: Date }, tx: Executor = db): Promise<void> {
      await tx.insert(users).values(row).onConflictDoNothing({ target: users.id });
    },

    async applyProfile(id: string, changes: { email?: string; name?: string | null; role?: Role }, at: Date, tx: Executor = db): Promise<void> {
      if (Object.keys(changes).length === 0) return;
      await tx.update(users).set({ ...changes, updatedAt: at }).where(eq(users.id, id));
    },

    async recordLogin(id: string, at: Date, tx: Executor = db): Promise<void> {
      await tx
        .update(users)
        .set({ lastLoginAt: sql`greatest(${users.lastLoginAt}, ${at.toISOString()}::timestamptz)` })
        .where(eq(users.id, id));
    },

    async setMfa(id: string, enabled: boolean, tx: Executor = db): Promise<void> {
      await tx.update(users).set({ mfaEnabled: enabled }).where(eq(users.id, id));
    },

    /** The user row, locked until the transaction ends. */
    async lock(id: string, tx: Executor): Promise<UserRow | undefined> {
      const [row] = await tx.select().from(users).where(eq(users.id, id)).for('update');
      return row;
    },

    async activeAdminsOtherThan(id: string, tx: Executor): Promise<number> {
      const [row] = await tx
        .select({ n: count() })
        .from(users)
        .where(and(eq(users.role, 'admin'), eq(users.status, 'active'), ne(users.id, id)));
      return row?.n ?? 0;
    },

    async setAccess(id: string, change: { role: Role; status: UserStatus; disabledAt: Date | null }, at: Date, tx: Executor): Promise<void> {
      await tx
        .update(users)
        .set({ ...change, updatedAt: at })
        .where(eq(users.id, id));
    },

    async exists(id: string, tx: Executor = db): Promise<boolean> {
      const rows = await tx.select({ id: users.id }).from(users).where(eq(users.id, id));
      return rows.length > 0;
    },

    async byId(id: string, tx: Executor = db): Promise<UserWithTotals | undefined> {
      const rows = await tx
        .select(withTotals)
        .from(users)
        .leftJoin(userTotals, eq(userTotals.userId, users.id))
        .leftJoin(quotas, eq(quotas.userId, users.id))
        .where(eq(users.id, id));
      return rows[0] ? flatten(rows[0]) : undefined;
    },

    /** Newest first; `after` is the last row of the previous page. */
    async list(filter: UserListFilter, limit: number, after?: { createdAt: Date; id: string }): Promise<UserWithTotals[]> {
      const conditions: SQL[] = [];
      if (filter.q) {
        const prefix = `${escapeLike(filter.q.toLowerCase())}%`;
        // The same expressions as the indexes users_email_lower_idx, users_email_domain_idx, users_name_lower_idx.
        conditions.push(
          sql`(lower(${users.email}) like ${prefix} or lower(split_part(${users.email}, '@', 2)) like ${prefix} or lower(${users.name}) like ${prefix})`,
        );
      }
      if (filter.role) conditions.push(eq(users.role, filter.role));
      if (filter.status) conditions.push(eq(users.status, filter.status));
      if (after) conditions.push(sql`(${users.createdAt}, ${users.id}) < (${after.createdAt.toISOString()}::timestamptz, ${after.id}::uuid)`);
      const rows = await db
        .select(withTotals)
        .from(users)
        .leftJoin(userTotals, eq(userTotals.userId, users.id))
        .leftJoin(quotas, eq(quotas.userId, users.id))
        .where(conditions.length > 0 ? and(...conditions) : undefined)
        .orderBy(sql`${users.createdAt} desc, ${users.id} desc`)
        .limit(limit);
      return rows.map(flatten);
    },
  };
}
