import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { sql } from 'drizzle-orm';
import type { FastifyBaseLogger } from 'fastify';
import type { WorkerDatabase } from '../worker-db';
import { scheduleRepository, type MaintenanceJob } from './schedule.repository';

export interface MaintenanceOptions {
  db: WorkerDatabase;
  logger: FastifyBaseLogger;
  jobs: MaintenanceJob[];
  pollMs: number;
}

/** Rows deleted per statement, so a purge never holds long locks on a large backlog. */
const PURGE_BATCH = 5000;

async function deleteInBatches(tx: WorkerDatabase, statement: () => ReturnType<typeof sql>): Promise<number> {
  let total = 0;
  for (;;) {
    const result = await tx.execute(statement());
    const n = result.rowCount ?? 0;
    total += n;
    if (n < PURGE_BATCH) return total;
  }
}

/** The worker's own schema maintenance: purge old outbox rows, processed event ids and run logs. */
export function purgeJobs(options: { intervalMs: number; outboxRetentionHours: number; processedEventsRetentionHours: number }): MaintenanceJob[] {
  return [
    {
      name: 'purge-outbox',
      intervalMs: options.intervalMs,
      run: async (tx) => {
        const hours = `${options.outboxRetentionHours} hours`;
        const outbox = await deleteInBatches(tx, () => sql`
          delete from worker.outbox where id in (
            select id from worker.outbox
            where published_at is not null and published_at < now() - ${hours}::interval
            limit ${PURGE_BATCH})`);
        const runs = await deleteInBatches(tx, () => sql`
          delete from worker.schedule_runs where id in (
            select id from worker.schedule_runs where started_at < now() - ${hours}::interval limit ${PURGE_BATCH})`);
        return { outbox, scheduleRuns: runs };
      },
    },
    {
      name: 'purge-processed-events',
      intervalMs: options.intervalMs,
      run: async (tx) => {
        const hours = `${options.processedEventsRetentionHours} hours`;
        const processedEvents = await deleteInBatches(tx, () => sql`
          delete from worker.processed_events where (consumer_group, event_id) in (
            select consumer_group, event_id from worker.processed_events
            where processed_at < now() - ${hours}::interval limit ${PURGE_BATCH})`);
        return { processedEvents };
      },
    },
  ];
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
