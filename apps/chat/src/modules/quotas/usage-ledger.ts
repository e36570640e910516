import type { Reservation, Settlement } from '../messages/turns.repository';

export interface UsageStore {
  /** Reserves `tokens` in one statement, held by `holder` (QuotaHolders), and tells what is left after it. */
  reserveQuota(userId: string, month: string, tokens: number, holder: string): Promise<Reservation>;
  /** Settles reservations (each against the holder it names) and writes their events in one statement. */
  settleAndPublish(settlements: Settlement[]): Promise<void>;
}

interface Waiter<T> {
  resolve(value: T): void;
  reject(error: unknown): void;
}

/** Most requests folded into one statement. */
const MAX_BATCH = 256;
/**
 * A user is far from their limit when what is known of their room covers this many times a
 * request's reservation: their settlements may linger (see `settle`).
 */
const FAR_FROM_LIMIT = 16;
/** How long what a reservation said was left is trusted for `covers`. */
const HEADROOM_TTL_MS = 10_000;
/** Users whose headroom is remembered; past it the oldest knowledge is dropped. */
const MAX_HEADROOMS = 10_000;
/** A lease that served no request for this long is given back. */
const LEASE_IDLE_MS = 1_000;
/** No request is served from a lease older than this: it is given back and a new one taken (see `take`). */
const LEASE_MAX_AGE_MS = 10_000;
/** At most this share of what the user has left goes into one lease. */
const LEASE_SHARE_OF_HEADROOM = 1 / 8;
/** How often idle and old leases are looked for. */
const LEASE_SWEEP_MS = 250;
/** Tries of a settlement written after its answer (settleRetrying), the first pause between them, growing 4×. */
export const SETTLE_ATTEMPTS = 5;
const SETTLE_RETRY_MS = 100;

/** Tokens one instance holds reserved for a user and month, handed out to requests without a statement. */
interface Lease {
  userId: string;
  month: string;
  /** Reserved in the database and not yet handed to a request. */
  tokens: number;
  /** The holder its tokens are reserved under. */
  holder: string;
  takenAt: number;
  lastUsedAt: number;
}

/**
 * Group commit for the quota writes of the OpenAI-compatible API. One API key at high concurrency
 * (a backend calling Vivier) makes every request reserve and settle on the same quota row; one
 * statement per request queues them all on that row's lock and a WAL flush each. Here, while a
 * statement for a user's row is in flight, the reservations that arrive meanwhile wait and go as
 * one reservation of their sum; settlements of every user go as one statement while another is in
 * flight. A lone reservation never waits (nothing is in flight), so the latency of light traffic is
 * a single statement as before, and under load a request waits at most for the statement ahead.
 * Settlements, which no answer waits for, also linger (100 ms by default) when nothing is in flight
 * and their user is known to be far from their limit, so that steady light traffic (one connection,
 * one request after another) shares statements too.
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
  private readonly reservations = new Map<string, Array<{ tokens: number } & Waiter<string | undefined>>>();
  private settlements: Array<{ settlement: Settlement } & Waiter<void>> = [];
  private settling = false;
  /** The linger of the next settlement statement, while it waits. */
  private lingering: NodeJS.Timeout | undefined;
  /** Set once the service is closing (see `closing`). */
  private noLinger = false;
  /** Tokens left per user and month as the last granted reservation reported them (null: no limit), less what was asked since. */
  private readonly headroom = new Map<string, { tokens: number | null; at: number }>();

  /** Tokens reserved ahead per user and month (see `take`). */
  private readonly leases = new Map<string, Lease>();
  private leaseSweep: NodeJS.Timeout | undefined;
  /** Lease give-backs not yet written, per user and month (see drainReservations). */
  private readonly givingBack = new Map<string, Promise<void>>();
  /** Give-backs and reservation drains under way: closing waits for them (a drain may take a lease). */
  private readonly working = new Set<Promise<void>>();
  private readonly settleLingerMs: number;
  /** Set to 0 once the leases are given back for good (closing). */
  private leaseRequests: number;
  private readonly onReleaseError: (error: unknown, lease: { userId: string; month: string; tokens: number }) => void;

  /**
   * `settleLingerMs`: how long a settlement that finds no statement in flight waits for others to
   * join it (Kafka's `linger.ms`, PostgreSQL's `commit_delay`), when its user is far from their
   * limit. Answers never wait for it (run() answers first), so it costs no latency; what it saves
   * is a statement, a commit, a relay pass and a Kafka request for each settlement that joins, and
   * on two shared cores that background work is what the next request's latency competes with.
   *
   * `holder`: the holder id reservations are made under now (QuotaHolders' `id`); each grant
   * names the one it was made under, and its settlement must carry it.
   *
   * `leaseRequests`: when a user is far from their limit, a reservation statement reserves this
   * many times what it was asked for, and the rest serves the next requests of that user on this
   * instance without a statement (see `take`); 0 or 1 = none. `onReleaseError`: a lease could not
   * be given back (its tokens stay reserved until this instance stops or expires).
   */
  constructor(
    private readonly store: UsageStore,
    private readonly holder: () => string,
    options: {
      settleLingerMs?: number;
      leaseRequests?: number;
      onReleaseError?: (error: unknown, lease: { userId: string; month: string; tokens: number }) => void;
    } = {},
  ) {
    this.settleLingerMs = options.settleLingerMs ?? 0;
    this.leaseRequests = options.leaseRequests ?? 0;
    this.onReleaseError = options.onReleaseError ?? (() => undefined);
  }

  /**
   * Grants `tokens` from this instance's lease for the user and month, without a statement: the
   * holder they are reserved under when the lease held enough (the tokens are then the caller's
   * reservation, settled like any other, against that holder), undefined when the caller must
   * `reserve`. A lease is taken by a reservation statement when
   * the user is known to be far from their limit: the statement reserves `leaseRequests` times
   * what it was asked for, at most an eighth of what the user has left, so that the tokens held
   * ahead are never more than a small part of anyone's quota. It is given back (one settlement
   * statement) once it has served no request for a second, once it is 10 s old, and when the
   * service closes. A quota lowered meanwhile is therefore met within 10 s, and past it by at most
   * what the lease held on each instance. The leases and reservations of an instance that dies are
   * given back by the others once its holder row expires (QuotaHolders).
   */
  take(userId: string, month: string, tokens: number): string | undefined {
    const lease = this.leases.get(`${userId} ${month}`);
    if (!lease || lease.tokens < tokens) return undefined;
    const now = performance.now();
    if (now - lease.takenAt > LEASE_MAX_AGE_MS) return undefined;
    lease.tokens -= tokens;
    lease.lastUsedAt = now;
    return lease.holder;
  }

  /** Gives back every lease and takes no more (closing the service); resolves once their settlements are written. */
  async releaseLeases(): Promise<void> {
    this.closing();
    this.leaseRequests = 0;
    if (this.leaseSweep) clearInterval(this.leaseSweep);
    this.leaseSweep = undefined;
    // A drain still running may take a lease when its statement is answered (it is given back at
    // once, see lease()); a give-back started by the sweep may still be writing.
    while (this.leases.size > 0 || this.working.size > 0) {
      for (const key of [...this.leases.keys()]) void this.release(key);
      await Promise.all(this.working);
    }
  }

  /**
   * Gives every lease back now and forgets what was known of users' room; new leases are taken as
   * before. For an instance whose holds were given back for it (QuotaHolders), now under a new
   * holder id: its leases are no longer reserved (their give-back, bounded by what the old
   * holder's hold still holds, gives back nothing), and must not serve requests.
   */
  returnLeases(): Promise<void> {
    this.headroom.clear();
    return Promise.all([...this.leases.keys()].map((key) => this.release(key))).then(() => undefined);
  }

  /** Runs `work` as part of what closing waits for. */
  private track(work: Promise<void>): Promise<void> {
    const done = work.then(
      () => void this.working.delete(done),
      () => void this.working.delete(done), // neither rejects (each settles its own waiters); closing must not throw
    );
    this.working.add(done);
    return done;
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

  /** Reserves `tokens` (batched with others of the user, see the class): the holder it was granted under, undefined when refused. */
  reserve(userId: string, month: string, tokens: number): Promise<string | undefined> {
    const key = `${userId} ${month}`;
    // Near the limit, settlements lingering still count whole reservations: write them first.
    if (!this.farFromLimit(userId, month, tokens)) this.flush();
    const known = this.headroom.get(key);
    if (known && known.tokens !== null) known.tokens -= tokens;
    return new Promise<string | undefined>((resolve, reject) => {
      const queue = this.reservations.get(key);
      if (queue) {
        queue.push({ tokens, resolve, reject });
      } else {
        this.reservations.set(key, [{ tokens, resolve, reject }]);
        void this.track(this.drainReservations(key, userId, month));
      }
    });
  }

  /**
   * `settle`, tried again after a failure (SETTLE_ATTEMPTS in all, with growing pauses), for
   * settlements nobody waits for: it rejects with the last error once it gives up.
   */
  async settleRetrying(settlement: Settlement): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.settle(settlement);
        return;
      } catch (error) {
        if (attempt >= SETTLE_ATTEMPTS) throw error;
        await new Promise((resolve) => setTimeout(resolve, SETTLE_RETRY_MS * 4 ** (attempt - 1)));
      }
    }
  }

  /**
   * Queues a settlement for the next statement. With `settleLingerMs`, the first one waits that
   * long for others, unless its user is not known to be far from their limit: until a settlement
   * is written its reservation (prompt + maximum output) counts instead of what was used, which
   * only matters near the limit, so there it is written at once, with every one waiting.
   */
  settle(settlement: Settlement): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.settlements.push({ settlement, resolve, reject });
      // A lease's give-back (no events) only gives room back: it never needs to hurry.
      const urgent =
        this.noLinger ||
        (settlement.events.length > 0 && !this.farFromLimit(settlement.userId, settlement.month, Math.max(settlement.reserved, 1)));
      if (this.lingering && urgent) {
        this.flush();
        return;
      }
      if (this.settling) return;
      this.settling = true;
      if (this.settleLingerMs > 0 && !urgent) {
        this.lingering = setTimeout(() => {
          this.lingering = undefined;
          void this.drainSettlements();
        }, this.settleLingerMs);
      } else void this.drainSettlements();
    });
  }

  /**
   * Whether the user is known to be far from their limit: no limit at all, or room for
   * FAR_FROM_LIMIT times `tokens` as of a reservation at most 10 s old (unknown or older counts as near).
   */
  private farFromLimit(userId: string, month: string, tokens: number): boolean {
    return this.headroom.get(`${userId} ${month}`)?.tokens === null || this.covers(userId, month, FAR_FROM_LIMIT * tokens);
  }

  /** From now on settlements do not linger, and those lingering are written now: the service is closing. */
  closing(): void {
    this.noLinger = true;
    this.flush();
  }

  /** Writes the settlements that linger now. */
  private flush(): void {
    if (!this.lingering) return;
    clearTimeout(this.lingering);
    this.lingering = undefined;
    void this.drainSettlements();
  }

  private async drainReservations(key: string, userId: string, month: string): Promise<void> {
    const queue = this.reservations.get(key)!;
    while (queue.length > 0) {
      // Those that arrived while a statement took a lease are served from it, in order.
      while (queue.length > 0) {
        const held = this.take(userId, month, queue[0]!.tokens);
        if (held === undefined) break;
        const served = queue.shift()!;
        const known = this.headroom.get(key); // reserve() counted it as asked for; the lease held it already
        if (known && known.tokens !== null) known.tokens += served.tokens;
        served.resolve(held);
      }
      if (queue.length === 0) break;
      const batch = queue.splice(0, MAX_BATCH);
      try {
        const total = batch.reduce((sum, r) => sum + r.tokens, 0);
        const ahead = this.leaseSize(key, total);
        let holder = this.holder();
        let answer = await this.store.reserveQuota(userId, month, total + ahead, holder);
        if (ahead > 0 && answer.granted) this.lease(key, userId, month, ahead, holder);
        else if (ahead > 0) answer = await this.store.reserveQuota(userId, month, total, (holder = this.holder()));
        // Refused while this user's lease is being given back (it was too small or too old for this
        // batch, see leaseSize; give-backs linger): its tokens still count as reserved. Asked again
        // once it is written, so that a lease never makes a request 429 that fits without it.
        const givingBack = answer.granted ? undefined : this.givingBack.get(key);
        if (givingBack) {
          this.flush();
          await givingBack;
          answer = await this.store.reserveQuota(userId, month, total, (holder = this.holder()));
        }
        this.learn(key, answer, queue);
        if (answer.granted) {
          for (const r of batch) r.resolve(holder);
        } else if (batch.length === 1) {
          batch[0]!.resolve(undefined);
        } else {
          for (const [i, r] of batch.entries()) {
            const one = await this.store.reserveQuota(userId, month, r.tokens, (holder = this.holder()));
            this.learn(key, one, [...batch.slice(i + 1), ...queue]);
            r.resolve(one.granted ? holder : undefined);
          }
        }
      } catch (error) {
        for (const r of batch) r.reject(error); // a no-op for those already answered
      }
    }
    this.reservations.delete(key);
  }

  /**
   * What a statement reserving `total` should reserve ahead for a lease: nothing unless leases are
   * on, the user's room is known and recent, and an eighth of it holds the lease with the
   * requests' own tokens; a lease still held (too small, or too old) is given back first (a reservation refused meanwhile waits for that give-back and asks again).
   */
  private leaseSize(key: string, total: number): number {
    if (this.leases.has(key)) void this.release(key);
    if (this.leaseRequests <= 1) return 0;
    const known = this.headroom.get(key);
    if (!known || performance.now() - known.at > HEADROOM_TTL_MS) return 0;
    const wanted = total * (this.leaseRequests - 1);
    const ahead = known.tokens === null ? wanted : Math.min(wanted, Math.floor(known.tokens * LEASE_SHARE_OF_HEADROOM) - total);
    return ahead >= total ? ahead : 0;
  }

  private lease(key: string, userId: string, month: string, tokens: number, holder: string): void {
    const now = performance.now();
    this.leases.set(key, { userId, month, tokens, holder, takenAt: now, lastUsedAt: now });
    // Taken by a statement that was in flight when the service began closing, or under a holder id
    // this instance has since left (its holds were given back; see returnLeases): given back at once.
    if (this.leaseRequests <= 1 || holder !== this.holder()) void this.release(key);
    else this.leaseSweep ??= setInterval(() => this.sweepLeases(), LEASE_SWEEP_MS).unref();
  }

  private sweepLeases(): void {
    const now = performance.now();
    for (const [key, lease] of this.leases) {
      if (now - lease.lastUsedAt > LEASE_IDLE_MS || now - lease.takenAt > LEASE_MAX_AGE_MS) void this.release(key);
    }
    if (this.leases.size === 0 && this.leaseSweep) {
      clearInterval(this.leaseSweep);
      this.leaseSweep = undefined;
    }
  }

  /**
   * Gives a lease's tokens back (a settlement of them with nothing used, retried as a request's
   * settlement is); they count as room again. Closing waits for it.
   */
  private release(key: string): Promise<void> {
    const lease = this.leases.get(key);
    if (!lease) return Promise.resolve();
    this.leases.delete(key);
    const known = this.headroom.get(key);
    if (known && known.tokens !== null) known.tokens += lease.tokens;
    if (lease.tokens === 0) return Promise.resolve();
    const given = { userId: lease.userId, month: lease.month, tokens: lease.tokens };
    const written = this.track(
      this.settleRetrying({ userId: lease.userId, month: lease.month, holder: lease.holder, reserved: lease.tokens, used: 0, events: [] }).catch((error: unknown) =>
        this.onReleaseError(error, given),
      ),
    );
    // Only what is held under this instance's holder id now gives room back (see drainReservations).
    if (lease.holder === this.holder()) {
      const before = this.givingBack.get(key);
      const all = before ? Promise.all([before, written]).then(() => undefined) : written;
      this.givingBack.set(key, all);
      void all.then(() => {
        if (this.givingBack.get(key) === all) this.givingBack.delete(key);
      });
    }
    return written;
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
