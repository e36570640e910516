import { DeleteObjectsCommand, type S3Client } from '@aws-sdk/client-s3';
import type { MaintenanceJob } from '../maintenance/schedule.repository';
import { exportRepository } from './export.repository';

const BATCH = 500;
const DELETE_TIMEOUT_MS = 60_000;

/** Maintenance job: deletes exports whose time is up from S3 and marks them expired. */
export function expireExportsJob(options: {
  s3: { client: S3Client; bucket: string };
  intervalMs: number;
  /** How long one S3 delete call may take (default 60 s). */
  deleteTimeoutMs?: number;
}): MaintenanceJob {
  const deleteTimeoutMs = options.deleteTimeoutMs ?? DELETE_TIMEOUT_MS;
  return {
    name: 'expire-exports',
    intervalMs: options.intervalMs,
    run: async (db) => {
      const repo = exportRepository(db);
      let expired = 0;
      // Exports S3 could not delete: left for the next run, and not asked again in this one.
      const stuck: string[] = [];
      let firstError: { Key?: string; Code?: string; Message?: string } | undefined;
      for (;;) {
        const due = await repo.expired(db, BATCH, stuck);
        if (due.length === 0) break;
        const keys = due.flatMap((d) => (d.objectKey ? [{ Key: d.objectKey }] : []));
        const undeleted = new Set<string>();
        if (keys.length > 0) {
          // Deleting a missing key is not an error, so a rerun after a crash is harmless. A key S3
          // could not delete comes back in `Errors` (the call itself succeeds): its export stays
          // `ready`, to be deleted at the next run, and the run is reported failed.
          // Bounded: a call that hangs would hold this instance's maintenance (and its stop) for good.
          const result = await options.s3.client.send(new DeleteObjectsCommand({ Bucket: options.s3.bucket, Delete: { Objects: keys, Quiet: true } }), {
            abortSignal: AbortSignal.timeout(deleteTimeoutMs),
          });
          for (const error of result.Errors ?? []) {
            if (error.Key) undeleted.add(error.Key);
            firstError ??= error;
          }
        }
        const deleted = due.filter((d) => !d.objectKey || !undeleted.has(d.objectKey));
        await repo.markExpired(db, deleted.map((d) => d.exportId));
        expired += deleted.length;
        for (const d of due) if (d.objectKey && undeleted.has(d.objectKey)) stuck.push(d.exportId);
        if (due.length < BATCH) break;
      }
      if (stuck.length > 0) {
        throw new Error(
          `S3 did not delete ${stuck.length} expired export(s) (first: ${firstError?.Key ?? '?'}: ${firstError?.Code ?? '?'} ${firstError?.Message ?? ''}); they are tried again at the next run (${expired} expired in this one)`,
        );
      }
      return { exports: expired };
    },
  };
}
