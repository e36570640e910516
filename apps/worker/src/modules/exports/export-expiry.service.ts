import { DeleteObjectsCommand, type S3Client } from '@aws-sdk/client-s3';
import type { MaintenanceJob } from '../maintenance/schedule.repository';
import { exportRepository } from './export.repository';

const BATCH = 500;

/** Maintenance job: deletes exports whose time is up from S3 and marks them expired. */
export function expireExportsJob(options: { s3: { client: S3Client; bucket: string }; intervalMs: number }): MaintenanceJob {
  return {
    name: 'expire-exports',
    intervalMs: options.intervalMs,
    run: async (db) => {
      const repo = exportRepository(db);
      let expired = 0;
      for (;;) {
        const due = await repo.expired(db, BATCH);
        if (due.length === 0) break;
        const keys = due.flatMap((d) => (d.objectKey ? [{ Key: d.objectKey }] : []));
        if (keys.length > 0) {
          // Deleting a missing key is not an error, so a rerun after a crash is harmless.
          await options.s3.client.send(new DeleteObjectsCommand({ Bucket: options.s3.bucket, Delete: { Objects: keys, Quiet: true } }));
        }
        await repo.markExpired(db, due.map((d) => d.exportId));
        expired += due.length;
        if (due.length < BATCH) break;
      }
      return { exports: expired };
    },
  };
}
