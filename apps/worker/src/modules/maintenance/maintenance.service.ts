import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { sql, type SQL } from 'drizzle-orm';
import type { FastifyBaseLogger } from 'fastify';
import type { WorkerDatabase } from '../worker-db';
import { scheduleRepository, type MaintenanceJob } from './schedule.repository';

export interface MaintenanceOptions {
  db: WorkerDatabase;
  logger: FastifyBaseLogger;
  jobs: MaintenanceJob[];
  pollMs: number;
}

/** Rows deleted per statement, so a purge never holds long locks. */
const PURGE_BATCH = 5000;

/** Runs `statement` (a delete of at most `limit` rows) until it deletes fewer; returns how many went. */
async function deleteInBatches(db: WorkerDatabase, statement: (limit: number) => SQL): Promise<number> {
  let total = 0;
  for (;;) {
    const { rowCount } = await db.execute(statement(PURGE_BATCH));
    total += rowCount ?? 0;
    if ((rowCount ?? 0) < PURGE_BATCH) return total;
  }
}

/**
 * The schedule's own run log, purged after `retentionHours`. (The outbox and processed event ids
 * of every service, the worker's included, are purged by that service's relay leader: see
 * `messagingHousekeeping` in @vivier/messaging.)
 */
export function purgeScheduleRunsJob(options: { intervalMs: number; retentionHours: number }): MaintenanceJob {
  return {
    name: 'purge-schedule-runs',
    intervalMs: options.intervalMs,
    run: async (db) => ({
      scheduleRuns: await deleteInBatches(
        db,
        (limit) => sql`
          delete from worker.schedule_runs where id in (
            select id from worker.schedule_runs where started_at < now() - make_interval(hours => ${options.retentionHours}) limit ${limit})`,
      ),
    }),
  };
}

/**
 * Finished completion jobs, deleted `retentionHours` after they ended (PROCESSED_EVENTS_RETENTION_HOURS:
 * a job row stops a redelivered request from calling the provider again, as the processed event
 * id does, and both go at the same age). Each holds the whole reply in `result`.
 */
export function purgeFinishedJobsJob(options: { intervalMs: number; retentionHours: number }): MaintenanceJob {
  return {
    name: 'purge-finished-jobs',
    intervalMs: options.intervalMs,
    run: async (db) => ({
      jobs: await deleteInBatches(
        db,
        (limit) => sql`
          delete from worker.jobs where assistant_message_id in (
            select assistant_message_id from worker.jobs
            where state = 'finished' and published_at is not null and updated_at < now() - make_interval(hours => ${options.retentionHours})
            limit ${limit})`,
      ),
    }),
  };
}

/**
 * Polls the schedule every `pollMs` and runs whatever is due (see scheduleRepository for why
 * this is safe on several instances). Stops with the app.
 */
export class MaintenanceScheduler {
  readonly instance = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  private readonly schedules;

  constructor(private readonly options: MaintenanceOptions) {
    this.schedules = scheduleRepository(options.db);
  }

  async start(): Promise<void> {
    for (const job of this.options.jobs) await this.schedules.register(job);
    this.stopped = false;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.tick().finally(() => this.schedule(this.options.pollMs));
    }, delayMs);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    for (const job of this.options.jobs) {
      if (this.stopped) return;
      try {
        const result = await this.schedules.runIfDue(job, this.instance);
        if (result) this.options.logger.info({ job: job.name, result }, 'maintenance job ran');
      } catch (error) {
        this.options.logger.error({ err: error, job: job.name }, 'maintenance job failed; it runs again at the next poll');
      }
    }
  }
}
