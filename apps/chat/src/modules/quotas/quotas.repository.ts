import type { Executor } from '@vivier/messaging';
import { chatTables } from '@vivier/db-chat';

const { quotas } = chatTables;

/** `YYYY-MM-01` of a time's calendar month in UTC: the quota period. */
export function quotaMonth(at: Date): string {
  return `${at.toISOString().slice(0, 7)}-01`;
}

/**
 * chat.quotas: the limits, from admin events. Reservations and settlements of chat.quota_usage are
 * statements of the turns repository (one round trip each, see RESERVE_QUOTA and SETTLE_AND_PUBLISH).
 */
export function quotasRepository(db: Executor) {
  return {
    async setLimit(userId: string, monthlyTokens: number | null, tx: Executor = db): Promise<void> {
      await tx
        .insert(quotas)
        .values({ userId, monthlyTokens, updatedAt: new Date() })
        .onConflictDoUpdate({ target: quotas.userId, set: { monthlyTokens, updatedAt: new Date() } });
    },
  };
}

export type QuotasRepository = ReturnType<typeof quotasRepository>;
