import type { S3Client } from '@aws-sdk/client-s3';
import { createEvent, cutText, EVENTS, type EventOf } from '@vivier/contracts';
import { HandlerTimedOut, type EventHandlers, type HandlerContext, type Publish } from '@vivier/messaging';
import type { FastifyBaseLogger } from 'fastify';
import type { WorkerDatabase } from '../worker-db';
import { ChatRefused } from '../chat-internal';
import { fetchUserExport } from './chat-export.client';
import { exportRepository } from './export.repository';
import { S3ObjectWriter } from './s3-object-writer';

export interface ExportConsumerDeps {
  db: WorkerDatabase;
  s3: { client: S3Client; bucket: string };
  publish: Publish;
  logger: FastifyBaseLogger;
  chatUrl: string;
  internalSecret: string;
  retentionHours: number;
  maxAttempts: number;
  /** Bytes per part of the multipart upload (tests use smaller ones). */
  partBytes?: number;
}

export const EXPORT_FORMAT = 'vivier-export/ndjson-1';

/** Where an export lives: one object per export id, so a retry overwrites rather than adds. */
export function exportObjectKey(userId: string, exportId: string): string {
  return `exports/${userId}/${exportId}.ndjson`;
}

const USER_REASON = 'The export could not be written; please try again.';

/**
 * `jobs.export`: a user's chats, messages and files (from chat's internal export route) as one
 * NDJSON bundle in S3: a header line, chat's lines as they came, a summary line with counts.
 * Publishes `export.ready` (object key, size, when it is deleted) or `export.failed`, once per
 * export id (worker.exports, updated in the publishing transaction). Chat being away or failing
 * is retried with backoff by the messaging library; on the last attempt `export.failed` is
 * committed first and the record is parked on the dead-letter topic.
 */
export function exportHandlers(deps: ExportConsumerDeps): EventHandlers {
  const repo = exportRepository(deps.db);

  async function fail(exportId: string, userId: string, reason: string): Promise<void> {
    await deps.db.transaction(async (own) => {
      if (await repo.finish(own, exportId, { state: 'failed', reason })) {
        await deps.publish(own, createEvent(EVENTS.workerExportFailed, { exportId, userId, reason: USER_REASON }));
      }
    });
  }

  async function handle(event: EventOf<typeof EVENTS.jobsExportRequested>, { tx, attempt, signal }: HandlerContext): Promise<void> {
    const { exportId, userId } = event.data;
    const log = deps.logger.child({ exportId, eventId: event.id, attempt });
    const row = await repo.begin(exportId, userId);
    if (row.state !== 'started') {
      log.info({ state: row.state }, 'export already done; nothing to do');
      return;
    }
    const objectKey = exportObjectKey(userId, exportId);
    // Streamed: chat's lines go to S3 as they come, a part at a time (a user's files come inline,
    // base64, so an export can be far larger than any buffer should be).
    const writer = new S3ObjectWriter(
      {
        client: deps.s3.client,
        bucket: deps.s3.bucket,
        key: objectKey,
        contentType: 'application/x-ndjson',
        contentDisposition: `attachment; filename="vivier-export-${exportId}.ndjson"`,
      },
      signal,
      deps.partBytes,
    );
    let sizeBytes: number;
    try {
      await writer.write(`${JSON.stringify({ type: 'export', format: EXPORT_FORMAT, exportId, userId, createdAt: new Date().toISOString() })}\n`);
      const counts = { chat: 0, message: 0, file: 0 };
      // Both calls end at the handler's deadline (CONSUMER_HANDLER_TIMEOUT_MS), and it is retried.
      for await (const line of fetchUserExport(deps.chatUrl, deps.internalSecret, userId, { signal })) {
        counts[line.type] += 1;
        await writer.write(`${JSON.stringify(line)}\n`);
      }
      await writer.write(`${JSON.stringify({ type: 'summary', chats: counts.chat, messages: counts.message, files: counts.file })}\n`);
      sizeBytes = await writer.end();
    } catch (error) {
      await writer.abort().catch((abortError: unknown) => log.warn({ err: abortError }, 'could not abort the multipart upload of a failed export; its parts stay until a lifecycle rule removes them'));
      const detail = error instanceof Error ? error.message : String(error);
      // A stop (a deploy) is no failure of the export: the record is left for the next member, even on its last attempt.
      const stopping = signal.aborted && !(signal.reason instanceof HandlerTimedOut);
      if (error instanceof ChatRefused || (attempt >= deps.maxAttempts && !stopping)) {
        await fail(exportId, userId, cutText(detail, 1000));
        log.warn({ err: error }, 'export failed for good; export.failed published');
        if (error instanceof ChatRefused) return;
      } else {
        log.warn({ err: error }, stopping ? 'export stopped with the consumer; the next member does it' : 'export failed; it will be retried');
      }
      throw error;
    }
    const expiresAt = new Date(Date.now() + deps.retentionHours * 3_600_000);
    if (await repo.finish(tx, exportId, { state: 'ready', objectKey, sizeBytes, expiresAt })) {
      await deps.publish(
        tx,
        createEvent(EVENTS.workerExportReady, { exportId, userId, objectKey, sizeBytes, expiresAt: expiresAt.toISOString() }),
      );
    }
  }

  return { 'vivier.jobs.export.requested.v1': handle };
}
