import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { SqlRunner } from '../messages/turns.repository';

/**
 * Pushes holder `$1`'s `expires_at` `$2` ms ahead; no row back when its row is gone (the others
 * judged this instance dead and gave its holds back, or it never registered).
 */
const RENEW = `
update chat.quota_holders set expires_at = now() + $2::int * interval '1 millisecond' where holder = $1::uuid returning 1`;

/**
 * Registers holder `$1`, expiring `$2` ms from now. Each try is under a fresh id (see renew): a
 * registration whose answer was lost leaves a row that holds nothing and expires.
 */
const REGISTER = `
insert into chat.quota_holders (holder, expires_at) values ($1::uuid, now() + $2::int * interval '1 millisecond')`;

/**
 * Gives back the holds of the holders that are gone: with `$1` null, those whose row expired and
 * those with holds but no row; with `$1` a holder, that one (closing). What each held leaves
 * `quota_usage.reserved`, and its rows go, in one statement. The quota rows are locked in key order
 * before their holds, as every statement touching holds does, so this cannot deadlock with them;
 * concurrent sweeps give each hold back once (the second finds it deleted).
 */
const RELEASE = `
with dead as (
  select r.holder from chat.quota_holders r
  where ($1::uuid is null and r.expires_at < now()) or r.holder = $1::uuid
  union
  select h.holder from chat.quota_holds h
  where $1::uuid is null and not exists (select 1 from chat.quota_holders r where r.holder = h.holder)
  union
  select $1::uuid where $1::uuid is not null
), locked as (
  select u.user_id, u.month from chat.quota_usage u
  where exists (select 1 from chat.quota_holds h join dead d on d.holder = h.holder where h.user_id = u.user_id and h.month = u.month)
  order by u.user_id, u.month for update of u
), held as (
  select h.holder, h.user_id, h.month from chat.quota_holds h
  join dead d on d.holder = h.holder join locked l on l.user_id = h.user_id and l.month = h.month
  for update of h
), released as (
  delete from chat.quota_holds h using held d
  where h.holder = d.holder and h.user_id = d.user_id and h.month = d.month
  returning h.user_id, h.month, h.tokens
), applied as (
  update chat.quota_usage u set reserved = greatest(u.reserved - r.tokens, 0)
  from (select user_id, month, sum(tokens)::bigint as tokens from released group by user_id, month) r
  where u.user_id = r.user_id and u.month = r.month
), gone as (
  delete from chat.quota_holders r using (
    select q.holder from chat.quota_holders q where q.holder in (select holder from dead) order by q.holder for update
  ) d where r.holder = d.holder returning 1
)
select (select count(*) from gone)::int as holders, (select coalesce(sum(tokens), 0) from released)::text as tokens`;

/**
 * Deletes this holder's (`$1`) holds that hold nothing, so that the table keeps the users with
 * something reserved rather than every user the instance ever served. Rows being written are
 * skipped (SKIP LOCKED): this never waits for, nor deadlocks with, a reservation or settlement;
 * a reservation that finds its row gone inserts it again.
 */
const PRUNE = `
delete from chat.quota_holds h using (
  select holder, user_id, month from chat.quota_holds where holder = $1::uuid and tokens = 0 for update skip locked
) z
where h.holder = z.holder and h.user_id = z.user_id and h.month = z.month`;

/**
 * Quota reservations of the OpenAI-compatible API live in an instance's memory (requests in flight,
 * leases) while `quota_usage.reserved` counts them. So that an instance that dies does not keep them
 * reserved for the rest of the month, each instance is a holder: its reservations and settlements
 * also write what it holds per user and month (quota_holds, in the same statements), its row in
 * quota_holders expires unless renewed, and every instance gives back the holds of expired ones
 * (RELEASE, every renewal), then deletes its own holds that hold nothing (PRUNE). Closing gives back
 * whatever this instance still holds and removes it.
 *
 * An instance cut off from the database for longer than its timeout is judged dead too: its holds
 * are given back. When it renews again it finds its row gone and registers under a fresh holder id
 * (`id` changes), and gives back the leases it kept in memory (`onRevived`). Every reservation,
 * lease and settlement names the holder it was made under, so what it reserved before the sweep
 * settles against the old id, whose holds are gone (it gives back nothing, as the sweep already
 * did), and never takes tokens from what it reserves under the new one. Reservations made under
 * the old id between the sweep and the renewal leave holds without a holder row; the next sweep
 * gives those back, or their own settlements do, whichever comes first: until they settle,
 * `reserved` can be too low by what those few requests reserved.
 */
export class QuotaHolders {
  /** This instance's holder id until it registers (its first registration keeps it). */
  private current = randomUUID();
  /** Registrations tried: any after the first takes a fresh id (reservations may have been made under the old one). */
  private registrations = 0;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private registered = false;
  private readonly everyMs: number;

  constructor(
    private readonly deps: {
      sql: SqlRunner;
      log: FastifyBaseLogger;
      /** How long this instance's holds outlive its last renewal. */
      timeoutMs: number;
      /** How often to renew and sweep (at most a third of the timeout). */
      intervalMs: number;
      onRevived: () => void;
    },
  ) {
    this.everyMs = Math.max(1, Math.min(deps.intervalMs, Math.floor(deps.timeoutMs / 3)));
  }

  /** Registers this instance (a failure is logged: the next tick retries) and starts renewing and sweeping. */
  async start(): Promise<void> {
    await this.tick();
    this.timer = setInterval(() => void this.tick(), this.everyMs);
    this.timer.unref();
  }

  /** The holder id this instance's reservations are made under now; it changes when this instance is judged dead and registers again. */
  get id(): string {
    return this.current;
  }

  /** Stops renewing and gives back what this instance still holds (after its leases and settlements are written). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.ticking;
    try {
      const left = await this.release(this.id);
      if (left > 0) this.deps.log.warn({ tokens: left }, 'quota holds left at close were given back');
    } catch (error) {
      this.deps.log.warn({ err: error }, 'could not remove this quota holder: the others give its holds back once it expires');
    }
  }

  /**
   * Pushes this instance's expiry ahead; true when it had to register (at start; later, only if its
   * row was gone: it was judged dead and its holds given back, or its registration had failed).
   * A registration after the first is under a fresh id, so that nothing reserved under the old one
   * settles against holds taken since; `onRevived` then gives back the leases held under the old
   * one (which costs nothing at start).
   */
  async renew(): Promise<boolean> {
    if (this.registered) {
      const renewed = await this.deps.sql.rows('chat-quota-holder-renew-v2', RENEW, [this.current, this.deps.timeoutMs]);
      if (renewed.length > 0) return false;
    }
    const holder = this.registrations++ === 0 ? this.current : randomUUID();
    await this.deps.sql.rows('chat-quota-holder-register-v1', REGISTER, [holder, this.deps.timeoutMs]);
    if (this.registered)
      this.deps.log.warn(
        { previous: this.current, holder },
        'this instance was judged dead (no renewal within CHAT_QUOTA_HOLDER_TIMEOUT_MS) and its quota holds given back: it goes on under a new holder id, and its leases are given back',
      );
    this.current = holder;
    this.registered = true;
    this.deps.onRevived();
    return true;
  }

  /** Gives back the holds of expired holders; returns the tokens given back. */
  async sweep(): Promise<number> {
    const tokens = await this.release(null);
    if (tokens > 0) this.deps.log.warn({ tokens }, 'quota reservations of stopped instances given back');
    return tokens;
  }

  private async release(holder: string | null): Promise<number> {
    const [row] = await this.deps.sql.rows<{ tokens: string }>('chat-quota-holds-release-v1', RELEASE, [holder]);
    return Number(row?.tokens ?? 0);
  }

  private async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = (async () => {
      try {
        await this.renew();
        await this.sweep();
        await this.deps.sql.rows('chat-quota-holds-prune-v1', PRUNE, [this.id]);
      } catch (error) {
        this.deps.log.warn({ err: error }, 'quota holder renewal or sweep failed');
      }
    })();
    await this.ticking;
    this.ticking = undefined;
  }
}
