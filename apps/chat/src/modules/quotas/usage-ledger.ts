import type { Reservation, Settlement } from '../messages/turns.repository';

export interface UsageStore {
  /** Reserves `tokens` in one statement, and tells what is left after it. */
  reserveQuota(userId: string, month: string, tokens: number): Promise<Reservation>;
  /** Settles reservations and writes their events in one statement. */
  settleAndPublish(settlements: Settlement[]): Promise<void>;
}

interface Waiter<T> {
  resolve(value: T): void;
  reject(error: unknown): void;
}

/** Most requests folded into one statement. */
const MAX_BATCH = 256;
/** How long what a reservation said was left is trusted for `covers`. */
const HEADROOM_TTL_MS = 10_000;
/** Users whose headroom is remembered; past it the oldest knowledge is dropped. */
const MAX_HEADROOMS = 10_000;

/**
 * Group commit for the quota writes of the OpenAI-compatible API. One API key at high concurrency
 * (a backend calling Vivier) makes every request reserve and settle on the same quota row; one
 * statement per request queues them all on that row's lock and a WAL flush each. Here, while a
 * statement for a user's row is in flight, the reservations that arrive meanwhile wait and go as
 * one reservation of their sum; settlements of every user go as one statement while another is in
 * flight. A lone reservation never waits (nothing is in flight), so the latency of light traffic is
 * a single statement as before, and under load a request waits at most for the statement ahead.
 * Settlements, which no answer waits for, also linger a few milliseconds when nothing is in flight,
 * so that steady light traffic (one connection, one request after another) shares statements too.
 *
 * Nothing is answered before its write has committed: a reservation is granted only by a statement
 * that reserved it, and a settlement resolves only once its statement committed. A sum that does
 * not fit (a user close to the limit) is retried one reservation at a time, in arrival order, so
 * batching never refuses a request that would have fitted on its own.
 *
 * Every granted reservation also says how many tokens the user has left; the ledger keeps that
 * (less what was asked for since) for a few seconds, so a caller can tell (`covers`) whether a
 * reservation is all but certain before its answer is in.
 */
export class UsageLedger {
  /** Reservations waiting per user and month; a key is present exactly while its drain runs. */
  private readonly reservations = new Map<string, Array<{ tokens: number } & Waiter<boolean>>>();
  private settlements: Array<{ settlement: Settlement } & Waiter<void>> = [];
  private settling = false;
  /** Tokens left per user and month as the last granted reservation reported them (null: no limit), less what was asked since. */
  private readonly headroom = new Map<string, { tokens: number | null; at: number }>();

  private readonly settleLingerMs: number;

  /**
   * `settleLingerMs`: how long a settlement that finds no statement in flight waits for others to
   * join it (Kafka's `linger.ms`, PostgreSQL's `commit_delay`). Answers never wait for it (run()
   * answers first), so it costs no latency; what it saves is a statement, a commit and a relay
   * wake-up for each settlement that joins, which is most of them once requests come faster than
   * one per linger.
   */
  constructor(
    private readonly store: UsageStore,
    options: { settleLingerMs?: number } = {},
  ) {
    this.settleLingerMs = options.settleLingerMs ?? 0;
  }

  /**
   * True when the last reservation answered for this user and month, less everything asked for
   * since, left at least `tokens`, and is recent: another reservation of `tokens` will very likely
   * be granted (other instances may have spent the rest meanwhile, so it is a forecast, not a grant).
   */
  covers(userId: string, month: string, tokens: number): boolean {
    const known = this.headroom.get(`${userId} ${month}`);
    if (!known || performance.now() - known.at > HEADROOM_TTL_MS) return false;
    return known.tokens === null || known.tokens >= tokens;
  }

  reserve(userId: string, month: string, tokens: number): Promise<boolean> {
    const key = `${userId} ${month}`;
    const known = this.headroom.get(key);
    if (known && known.tokens !== null) known.tokens -= tokens;
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
      if (this.settling) return;
      this.settling = true;
      if (this.settleLingerMs > 0) setTimeout(() => void this.drainSettlements(), this.settleLingerMs);
      else void this.drainSettlements();
    });
  }

  private async drainReservations(key: string, userId: string, month: string): Promise<void> {
    const queue = this.reservations.get(key)!;
    while (queue.length > 0) {
      const batch = queue.splice(0, MAX_BATCH);
      try {
        const total = batch.reduce((sum, r) => sum + r.tokens, 0);
        const answer = await this.store.reserveQuota(userId, month, total);
        this.learn(key, answer, queue);
        if (answer.granted) {
          for (const r of batch) r.resolve(true);
        } else if (batch.length === 1) {
          batch[0]!.resolve(false);
        } else {
          for (const [i, r] of batch.entries()) {
            const one = await this.store.reserveQuota(userId, month, r.tokens);
            this.learn(key, one, [...batch.slice(i + 1), ...queue]);
            r.resolve(one.granted);
          }
        }
      } catch (error) {
        for (const r of batch) r.reject(error); // a no-op for those already answered
      }
    }
    this.reservations.delete(key);
  }

  /** Remembers what a reservation left, less the reservations still waiting to be written. */
  private learn(key: string, answer: Reservation, waiting: Array<{ tokens: number }>): void {
    let tokens = answer.granted ? answer.headroom : 0;
    if (tokens !== null) for (const r of waiting) tokens -= r.tokens;
    this.headroom.delete(key); // re-inserted last: the map stays in order of last news
    this.headroom.set(key, { tokens, at: performance.now() });
    if (this.headroom.size > MAX_HEADROOMS) this.headroom.delete(this.headroom.keys().next().value!);
  }

  /** Writes the settlements waiting, a batch per statement, until none is left; `settling` is set by the caller. */
  private async drainSettlements(): Promise<void> {
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
