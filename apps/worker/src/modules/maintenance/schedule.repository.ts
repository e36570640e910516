import { sql } from 'drizzle-orm';
import type { WorkerDatabase } from '../worker-db';

export interface MaintenanceJob {
  name: string;
  intervalMs: number;
  /** Runs inside the transaction that holds the job's schedule row. */
  run: (tx: WorkerDatabase) => Promise<Record<string, unknown>>;
}

/**
 * Leader election per job through worker.schedules: an instance runs a job only inside a
 * transaction holding its row (`FOR UPDATE SKIP LOCKED`, so other instances skip it instead of
 * waiting) and only once `next_run_at` has passed; it then moves `next_run_at` one interval on.
 * However many instances poll, each job runs once per interval; a crashed instance's transaction
 * rolls back and the next poll of any instance runs the job.
 */
export function scheduleRepository(db: WorkerDatabase) {
  return {
    async register(job: MaintenanceJob): Promise<void> {
      await db.execute(sql`
        insert into worker.schedules (name, interval_ms, next_run_at) values (${job.name}, ${job.intervalMs}, now())
        on conflict (name) do update set interval_ms = excluded.interval_ms,
          next_run_at = least(worker.schedules.next_run_at, now() + excluded.interval_ms * interval '1 millisecond')`);
    },

    /** Runs the job if it is due and no other instance holds it; returns what it did, or undefined. */
    async runIfDue(job: MaintenanceJob, instance: string): Promise<Record<string, unknown> | undefined> {
      return db.transaction(async (tx) => {
        const due = await tx.execute<{ started_at: string }>(sql`
          select now()::text as started_at from worker.schedules
          where name = ${job.name} and next_run_at <= clock_timestamp()
          for update skip locked`);
        const row = due.rows[0];
        if (!row) return undefined;
        const result = await job.run(tx as unknown as WorkerDatabase);
        await tx.execute(sql`
          update worker.schedules
          set next_run_at = clock_timestamp() + (interval_ms * interval '1 millisecond'),
              last_run_at = ${row.started_at}::timestamptz, last_run_by = ${instance},
              last_result = ${JSON.stringify(result)}::jsonb, runs = runs + 1
          where name = ${job.name}`);
        await tx.execute(sql`
          insert into worker.schedule_runs (name, instance, started_at, result)
          values (${job.name}, ${instance}, ${row.started_at}::timestamptz, ${JSON.stringify(result)}::jsonb)`);
        return result;
      });
    },
  };
}
