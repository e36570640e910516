import type { Executor } from '@vivier/messaging';
import { adminTables } from '@vivier/db-admin';

const { quotas } = adminTables;

/** admin.quotas: the monthly token quota each user was given (null: unlimited). */
export function quotasRepository(db: Executor) {
  return {
    async set(row: { userId: string; monthlyTokens: number | null; updatedBy: string; updatedAt: Date }, tx: Executor = db): Promise<void> {
      await tx
        .insert(quotas)
        .values(row)
        .onConflictDoUpdate({ target: quotas.userId, set: { monthlyTokens: row.monthlyTokens, updatedBy: row.updatedBy, updatedAt: row.updatedAt } });
    },
  };
}
