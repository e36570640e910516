import type { Settlement } from '../messages/turns.repository';

export interface UsageStore {
  /** Reserves `tokens` in one statement; false when the quota refused them. */
  reserveQuota(userId: string, month: string, tokens: number): Promise<boolean>;
  /** Settles reservations and writes their events in one statement. */
  settleAndPublish(settlements: Settlement[]): Promise<void>;
}

interface Waiter<T> {
  resolve(value: T): void;
  reject(error: unknown): void;
}

/** Most requests folded into one statement. */
const MAX_BATCH = 256;

/**
 * Group commit for the quota writes of the OpenAI-compatible API. One API key at high concurrency
 * (a backend calling Vivier) makes every request reserve and settle on the same quota row; one
 * statement per request queues them all on that row's lock and a WAL flush each. Here, while a
 * statement for a user's row is in flight, the reservations that arrive meanwhile wait and go as
 * one reservation of their sum; settlements of every user go as one statement while another is in
 * flight. A lone request never waits (nothing is in flight), so the latency of light traffic is a
 * single statement as before, and under load a request waits at most for the statement ahead.
 *
 * Nothing is answered before its write has committed: a reservation is granted only by a statement
 * that reserved it, and a settlement resolves only once its statement committed. A sum that does
 * not fit (a user close to the limit) is retried one reservation at a time, in arrival order, so
 * batching never refuses a request that would have fitted on its own.
 */
export class UsageLedger {
  /** Reservations waiting per user and month; a key is present exactly while its drain runs. */
  private readonly reservations = new Map<string, Array<{ tokens: number } & Waiter<boolean>>>();
  private settlements: Array<{ settlement: Settlement } & Waiter<void>> = [];
  private settling = false;

  constructor(private readonly store: UsageStore) {}

  reserve(userId: string, month: string, tokens: number): Promise<boolean> {
    const key = `${userId} ${month}`;
    return new Promise<boolean>((resolve, reject) => {
      const queue = this.reservations.get(key);
      if (queue) {
        queue.push({ tokens, resolve, reject });
      } else {
        this.reservations.set(key, [{ tokens, resolve, reject }]);
        void this.drainReservations(key, userId, month);
      }
    });
  }

  settle(settlement: Settlement): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.settlements.push({ settlement, resolve, reject });
      if (!this.settling) void this.drainSettlements();
    });
  }

  private async drainReservations(key: string, userId: string, month: string): Promise<void> {
    const queue = this.reservations.get(key)!;
    while (queue.length > 0) {
      const batch = queue.splice(0, MAX_BATCH);
      try {
        const total = batch.reduce((sum, r) => sum + r.tokens, 0);
        if (await this.store.reserveQuota(userId, month, total)) {
          for (const r of batch) r.resolve(true);
        } else if (batch.length === 1) {
          batch[0]!.resolve(false);
        } else {
          for (const r of batch) r.resolve(await this.store.reserveQuota(userId, month, r.tokens));
        }
      } catch (error) {
        for (const r of batch) r.reject(error); // a no-op for those already answered
      }
    }
    this.reservations.delete(key);
  }

  private async drainSettlements(): Promise<void> {
    this.settling = true;
    try {
      while (this.settlements.length > 0) {
        const batch = this.settlements.splice(0, MAX_BATCH);
        try {
          await this.store.settleAndPublish(batch.map((s) => s.settlement));
          for (const s of batch) s.resolve();
        } catch (error) {
          for (const s of batch) s.reject(error);
        }
      }
    } finally {
      this.settling = false;
    }
  }
}
