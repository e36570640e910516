import { and, eq, isNull, sql } from 'drizzle-orm';
import { workerTables } from '@vivier/db-worker';
import type { Executor } from '@vivier/messaging';
import { cutText, type JobsCompletionRequestedData, type WorkerCompletionFinishedData } from '@vivier/contracts';
import type { WorkerDatabase } from '../worker-db';

const { jobs } = workerTables;

export type JobClaim =
  | { kind: 'claimed'; attempts: number }
  | { kind: 'finished'; result: WorkerCompletionFinishedData; published: boolean }
  | { kind: 'busy' };

/** worker.jobs: the state of each async completion, keyed by its assistant message. */
export function completionJobRepository(db: WorkerDatabase) {
  return {
    /**
     * Committed on its own before the provider is called: takes the job (new, or started with an
     * expired lease, e.g. after a failed attempt or a crash), or says it is finished or busy.
     */
    async claim(data: JobsCompletionRequestedData, leaseMs: number): Promise<JobClaim> {
      const leaseUntil = sql`now() + ${`${leaseMs} milliseconds`}::interval`;
      const [taken] = await db
        .insert(jobs)
        .values({
          assistantMessageId: data.assistantMessageId,
          chatId: data.chatId,
          userId: data.userId,
          state: 'started',
          attempts: 1,
          leaseUntil,
        })
        .onConflictDoUpdate({
          target: jobs.assistantMessageId,
          set: { attempts: sql`${jobs.attempts} + 1`, leaseUntil, updatedAt: sql`now()` },
          setWhere: sql`${jobs.state} = 'started' and ${jobs.leaseUntil} < now()`,
        })
        .returning({ attempts: jobs.attempts });
      if (taken) return { kind: 'claimed', attempts: taken.attempts };
      const [row] = await db.select().from(jobs).where(eq(jobs.assistantMessageId, data.assistantMessageId));
      if (row?.state === 'finished' && row.result) {
        return { kind: 'finished', result: row.result as unknown as WorkerCompletionFinishedData, published: row.publishedAt !== null };
      }
      return { kind: 'busy' };
    },

    /** The provider answered: keep the answer, so a retry of what follows never calls it again. */
    async storeResult(assistantMessageId: string, result: WorkerCompletionFinishedData, tx: Executor = db): Promise<void> {
      await tx
        .update(jobs)
        .set({ state: 'finished', result: result as unknown as Record<string, unknown>, lastError: null, updatedAt: sql`now()` })
        .where(eq(jobs.assistantMessageId, assistantMessageId));
    },

    /** Keeps the job while the provider is still answering. */
    async renewLease(assistantMessageId: string, leaseMs: number): Promise<void> {
      await db
        .update(jobs)
        .set({ leaseUntil: sql`now() + ${`${leaseMs} milliseconds`}::interval` })
        .where(and(eq(jobs.assistantMessageId, assistantMessageId), eq(jobs.state, 'started')));
    },

    /** A failed attempt that will be retried: free the job at once for the retry. */
    async release(assistantMessageId: string, error: string): Promise<void> {
      await db
        .update(jobs)
        .set({ lastError: cutText(error, 2000), leaseUntil: sql`now()`, updatedAt: sql`now()` })
        .where(and(eq(jobs.assistantMessageId, assistantMessageId), eq(jobs.state, 'started')));
    },

    /** Marks the result published, in the transaction that writes the event; false if it already was. */
    async markPublished(tx: Executor, assistantMessageId: string): Promise<boolean> {
      const rows = await tx
        .update(jobs)
        .set({ publishedAt: sql`now()`, updatedAt: sql`now()` })
        .where(and(eq(jobs.assistantMessageId, assistantMessageId), eq(jobs.state, 'finished'), isNull(jobs.publishedAt)))
        .returning({ id: jobs.assistantMessageId });
      return rows.length > 0;
    },
  };
}

export type CompletionJobRepository = ReturnType<typeof completionJobRepository>;
