import { sql } from 'drizzle-orm';
import type { WorkerDatabase } from '../worker-db';

export interface MaintenanceJob {
  name: string;
  intervalMs: number;
  /**
   * Runs outside any transaction of the schedule's (its statements commit as they go, so it must
   * be safe to run again after a crash). Calls out (S3) may take their time: nothing is held.
   */
  run: (db: WorkerDatabase) => Promise<Record<string, unknown>>;
}

/** A claimed run that never reported (its instance died) is run again after this, at the latest. */
const MIN_LEASE_MS = 5 * 60_000;

/**
 * Runs per job through worker.schedules: an instance claims a due job with one statement that
 * moves `next_run_at` a lease ahead (an UPDATE: of instances claiming at once, one finds it due);
 * then runs it, outside any transaction; then sets `next_run_at` one interval after the end and
 * logs the run. However many instances poll, each job runs once per interval. A crashed
 * instance's run is taken up again when its lease ends; a failed run is tried again an interval on.
 *
 * The job once ran inside the transaction that held its row (FOR UPDATE). Locking the row gave
 * that transaction an id, and every outbox relay of the cluster publishes only what committed
 * before the oldest transaction still open: a slow S3 call in a job held back every service's
 * events for as long as it took.
 */
export function scheduleRepository(db: WorkerDatabase) {
  return {
    /**
     * Adds the job, due at once. An instance starting with the job as it is changes nothing. A new
     * interval takes effect now (the next run no later than one new interval away), except while a
     * run is under way: its `next_run_at` is its lease (`claimed_until`), and moving it would let
     * another instance run the job alongside; that run's end schedules the next with the new one.
     */
    async register(job: MaintenanceJob): Promise<void> {
      await db.execute(sql`
        insert into worker.schedules (name, interval_ms, next_run_at) values (${job.name}, ${job.intervalMs}, now())
        on conflict (name) do update set interval_ms = excluded.interval_ms,
          next_run_at = case when worker.schedules.claimed_until > now() then worker.schedules.next_run_at
            else least(worker.schedules.next_run_at, now() + excluded.interval_ms * interval '1 millisecond') end
        where worker.schedules.interval_ms <> excluded.interval_ms`);
    },

    /**
     * Runs the job if it is due and no other instance has claimed it; returns what it did, or
     * undefined. The end is written only while the claim is still this run's: a run that outlived
     * its lease leaves the schedule to the instance that claimed it next.
     */
    async runIfDue(job: MaintenanceJob, instance: string): Promise<Record<string, unknown> | undefined> {
      const lease = Math.max(job.intervalMs, MIN_LEASE_MS);
      const claimed = await db.execute<{ started_at: string; lease: string }>(sql`
        update worker.schedules set next_run_at = clock_timestamp() + ${lease} * interval '1 millisecond',
          claimed_until = clock_timestamp() + ${lease} * interval '1 millisecond'
        where name = ${job.name} and next_run_at <= clock_timestamp()
        returning clock_timestamp()::text as started_at, claimed_until::text as lease`);
      const row = claimed.rows[0];
      if (!row) return undefined;
      let result: Record<string, unknown>;
      try {
        result = await job.run(db);
      } catch (error) {
        await db.execute(sql`
          update worker.schedules set next_run_at = clock_timestamp() + (interval_ms * interval '1 millisecond'), claimed_until = null
          where name = ${job.name} and claimed_until = ${row.lease}::timestamptz`);
        throw error;
      }
      await db.transaction(async (tx) => {
        await tx.execute(sql`
          update worker.schedules
          set next_run_at = clock_timestamp() + (interval_ms * interval '1 millisecond'), claimed_until = null,
              last_run_at = ${row.started_at}::timestamptz, last_run_by = ${instance},
              last_result = ${JSON.stringify(result)}::jsonb, runs = runs + 1
          where name = ${job.name} and claimed_until = ${row.lease}::timestamptz`);
        await tx.execute(sql`
          insert into worker.schedule_runs (name, instance, started_at, result)
          values (${job.name}, ${instance}, ${row.started_at}::timestamptz, ${JSON.stringify(result)}::jsonb)`);
      });
      return result;
    },
  };
}
