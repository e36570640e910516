import { sql } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { chatTables } from '@vivier/db-chat';

const { quotas, quotaUsage } = chatTables;

/** node-postgres' result of `execute` (drizzle types it per driver). */
export interface QueryResult<T> {
  rows: T[];
  rowCount: number | null;
}

/** `YYYY-MM-01` of a time's calendar month in UTC: the quota period. */
export function quotaMonth(at: Date): string {
  return `${at.toISOString().slice(0, 7)}-01`;
}

/** chat.quotas (limits from admin events) and chat.quota_usage (reserved and used tokens per month). */
export function quotasRepository(db: Executor) {
  return {
    async setLimit(userId: string, monthlyTokens: number | null, tx: Executor = db): Promise<void> {
      await tx
        .insert(quotas)
        .values({ userId, monthlyTokens, updatedAt: new Date() })
        .onConflictDoUpdate({ target: quotas.userId, set: { monthlyTokens, updatedAt: new Date() } });
    },

    /**
     * Reserves `tokens` for `userId` in `month` if `used + reserved + tokens` stays within the
     * user's quota (or there is none): one statement, so concurrent sends cannot both squeeze
     * through the last tokens (the conflicting row is locked and re-checked). False when refused.
     */
    async reserve(userId: string, month: string, tokens: number, tx: Executor = db): Promise<boolean> {
      const result = (await tx.execute(sql`
        insert into ${quotaUsage} as u (user_id, month, reserved, used)
        select ${userId}::uuid, ${month}::date, ${tokens}, 0
        where not exists (
          select 1 from ${quotas} q where q.user_id = ${userId}::uuid and q.monthly_tokens is not null and q.monthly_tokens < ${tokens})
        on conflict (user_id, month) do update set reserved = u.reserved + excluded.reserved
        where not exists (
          select 1 from ${quotas} q where q.user_id = u.user_id and q.monthly_tokens is not null
            and u.used + u.reserved + excluded.reserved > q.monthly_tokens)
        returning 1`)) as QueryResult<unknown>;
      return (result.rowCount ?? result.rows.length) > 0;
    },

    /** Moves a reservation to real usage (or just releases it, with `used` 0). */
    async settle(userId: string, month: string, reserved: number, used: number, tx: Executor = db): Promise<void> {
      if (reserved === 0 && used === 0) return;
      await tx.execute(sql`
        insert into ${quotaUsage} as u (user_id, month, reserved, used) values (${userId}::uuid, ${month}::date, 0, ${used})
        on conflict (user_id, month) do update set reserved = greatest(u.reserved - ${reserved}, 0), used = u.used + ${used}`);
    },

    async usage(userId: string, month: string, tx: Executor = db): Promise<{ limit: number | null; reserved: number; used: number }> {
      const result = (await tx.execute(sql`
        select (select monthly_tokens from ${quotas} where user_id = ${userId}::uuid) as "limit",
               u.reserved, u.used
        from (select 1) one left join ${quotaUsage} u on u.user_id = ${userId}::uuid and u.month = ${month}::date`)) as QueryResult<{
        limit: string | null;
        reserved: string | null;
        used: string | null;
      }>;
      const row = result.rows[0];
      const num = (v: string | null | undefined) => (v === null || v === undefined ? null : Number(v));
      return { limit: num(row?.limit), reserved: num(row?.reserved) ?? 0, used: num(row?.used) ?? 0 };
    },
  };
}

export type QuotasRepository = ReturnType<typeof quotasRepository>;
