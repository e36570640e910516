import { EVENTS } from '@vivier/contracts';
import type { EventHandlers } from '@vivier/messaging';
import type { FastifyBaseLogger } from 'fastify';
import { exportsRepository } from './exports.repository';

/**
 * `worker.events` `export.ready` / `export.failed`: the worker's result, applied once (with the
 * event id, in the consumer's transaction) to an export still pending. A result for an export
 * chat does not know, or one already ended, changes nothing.
 */
export function exportHandlers(deps: { log: FastifyBaseLogger }): EventHandlers {
  return {
    [EVENTS.workerExportReady.type]: async (event, { tx }) => {
      const d = event.data;
      const applied = await exportsRepository(tx).finish(d.exportId, d.userId, { status: 'ready', objectKey: d.objectKey, sizeBytes: d.sizeBytes, expiresAt: new Date(d.expiresAt) }, tx);
      if (!applied) deps.log.info({ exportId: d.exportId }, 'export result for an export that is not pending: ignored');
    },
    [EVENTS.workerExportFailed.type]: async (event, { tx }) => {
      const d = event.data;
      const applied = await exportsRepository(tx).finish(d.exportId, d.userId, { status: 'failed', failureReason: d.reason }, tx);
      if (!applied) deps.log.info({ exportId: d.exportId }, 'export result for an export that is not pending: ignored');
    },
  };
}
