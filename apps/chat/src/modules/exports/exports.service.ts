import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { inArray, sql } from 'drizzle-orm';
import { chatTables } from '@vivier/db-chat';
import { createEvent, EVENTS } from '@vivier/contracts';
import type { Publish } from '@vivier/messaging';
import { decodeTimeCursor, encodeTimeCursor, problems, type Identity } from '@vivier/service-kit';
import type { ChatDatabase } from '../../database';
import { newId } from '../../ids';
import { chatsRepository } from '../chats/chats.repository';
import { chatView } from '../chats/chats.service';
import { filesRepository, type FileRow } from '../files/files.repository';
import { messagesRepository, messageView } from '../messages/messages.repository';
import { exportsRepository, type ExportRow } from './exports.repository';

export interface ExportView {
  id: string;
  status: 'pending' | 'ready' | 'failed';
  createdAt: string;
  /** Ready: a presigned download URL, valid until `urlExpiresAt`. */
  url?: string;
  urlExpiresAt?: string;
  /** Ready: when the bundle is deleted from storage. */
  expiresAt?: string;
  sizeBytes?: number;
  /** Failed: why, in words for the user. */
  error?: string;
}

const { chatSummaries } = chatTables;

/** A request for an export while one is pending reuses it, for this long. */
const PENDING_REUSE_MS = 60 * 60 * 1000;
const PAGE = 500;

/**
 * Data exports: a request stores a row and `export.requested` in one transaction; the worker
 * builds the bundle from the internal export stream below and reports back through
 * `export.ready` / `export.failed` (exports.consumer.ts). A ready export's URL is presigned on
 * each read, never stored, and never outlives the bundle.
 */
export class ExportsService {
  private readonly exports;

  constructor(
    private readonly deps: {
      db: ChatDatabase;
      publish: Publish;
      s3: { client: S3Client; bucket: string };
      /** The client that signs download URLs (the public endpoint, if browsers reach S3 elsewhere). */
      signer: S3Client;
      urlTtlSeconds: number;
    },
  ) {
    this.exports = exportsRepository(deps.db);
  }

  /** 202 with the new export, or with the one still pending (at most one is built at a time). */
  async request(user: Identity): Promise<ExportView> {
    const row = await this.deps.db.transaction(async (tx) => {
      // One request at a time per user: concurrent POSTs queue here rather than both inserting.
      await tx.execute(sql`select pg_advisory_xact_lock(hashtext(${`vivier-chat:export:${user.sub}`}))`);
      const pending = await this.exports.pendingSince(user.sub, new Date(Date.now() - PENDING_REUSE_MS), tx);
      if (pending) return pending;
      const { id, createdAt } = newId();
      const inserted = await this.exports.insert({ id, userId: user.sub, status: 'pending', createdAt, updatedAt: createdAt }, tx);
      await this.deps.publish(tx, createEvent(EVENTS.jobsExportRequested, { exportId: id, userId: user.sub }));
      return inserted;
    });
    return this.view(row);
  }

  async get(user: Identity, id: string): Promise<ExportView> {
    const row = await this.exports.find(user.sub, id);
    if (!row) throw problems.notFound('No such export.');
    return this.view(row);
  }

  /** A page of the caller's exports, newest first, as API.md pages every list. */
  async list(user: Identity, limit: number, cursor?: string): Promise<{ items: ExportView[]; nextCursor: string | null }> {
    const after = decodeTimeCursor(cursor)?.id;
    const rows = await this.exports.list(user.sub, limit + 1, after);
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    return {
      items: await Promise.all(page.map((row) => this.view(row))),
      nextCursor: rows.length > limit && last ? encodeTimeCursor(last.createdAt, last.id) : null,
    };
  }

  private async view(row: ExportRow): Promise<ExportView> {
    const base = { id: row.id, status: row.status, createdAt: row.createdAt.toISOString() };
    if (row.status === 'failed') return { ...base, error: row.failureReason ?? 'The export failed.' };
    if (row.status !== 'ready' || !row.objectKey || !row.expiresAt) return base;
    const left = Math.floor((row.expiresAt.getTime() - Date.now()) / 1000);
    if (left <= 0) return { ...base, status: 'failed', error: 'The export has expired; request a new one.' };
    const expiresIn = Math.min(this.deps.urlTtlSeconds, left);
    const url = await getSignedUrl(
      this.deps.signer,
      new GetObjectCommand({
        Bucket: this.deps.s3.bucket,
        Key: row.objectKey,
        ResponseContentDisposition: `attachment; filename="vivier-export-${row.id}.ndjson"`,
      }),
      { expiresIn },
    );
    return {
      ...base,
      url,
      urlExpiresAt: new Date(Date.now() + expiresIn * 1000).toISOString(),
      expiresAt: row.expiresAt.toISOString(),
      ...(row.sizeBytes === null ? {} : { sizeBytes: row.sizeBytes }),
    };
  }

  /**
   * Everything of one user, as NDJSON lines for the worker (`GET /internal/v1/users/:id/export`):
   * each chat followed by its messages oldest first, then the files (text inline, other files'
   * bytes base64). Read in keyset pages, so a large account streams in bounded memory.
   */
  async *userData(userId: string): AsyncGenerator<string> {
    const chats = chatsRepository(this.deps.db);
    const messages = messagesRepository(this.deps.db);
    const files = filesRepository(this.deps.db);
    let before: string | undefined;
    for (;;) {
      const page = (await chats.page(userId, { ...(before ? { before } : {}), limit: PAGE })).slice(0, PAGE);
      const summaries = await this.summariesOf(page.map((c) => c.id));
      for (const chat of page) {
        const summary = summaries.get(chat.id);
        // The chat's summary is written from the user's messages: it is theirs too.
        yield line({ type: 'chat', ...chatView(chat), ...(summary ? { summary } : {}) });
        let after: string | undefined;
        for (;;) {
          const rows = (await messages.page(chat.id, { ...(after ? { after } : {}), limit: PAGE })).slice(0, PAGE);
          for (const row of rows) yield line({ type: 'message', ...messageView(row) });
          if (rows.length < PAGE) break;
          after = rows.at(-1)!.id;
        }
      }
      if (page.length < PAGE) break;
      before = page.at(-1)!.id;
    }
    let after: string | undefined;
    for (;;) {
      const rows = await files.page(userId, { ...(after ? { after } : {}), limit: 50 });
      for (const row of rows) yield line(await this.fileLine(row));
      if (rows.length < 50) break;
      after = rows.at(-1)!.id;
    }
  }

  /** The summaries of some chats, by chat id, as an export line carries them. */
  private async summariesOf(chatIds: string[]): Promise<Map<string, { text: string; throughMessageId: string; updatedAt: string }>> {
    if (chatIds.length === 0) return new Map();
    const rows = await this.deps.db
      .select({ chatId: chatSummaries.chatId, text: chatSummaries.summary, throughId: chatSummaries.throughId, updatedAt: chatSummaries.updatedAt })
      .from(chatSummaries)
      .where(inArray(chatSummaries.chatId, chatIds));
    return new Map(rows.map((r) => [r.chatId, { text: r.text, throughMessageId: r.throughId, updatedAt: r.updatedAt.toISOString() }]));
  }

  private async fileLine(row: FileRow): Promise<Record<string, unknown>> {
    const base = { type: 'file', id: row.id, name: row.name, contentType: row.contentType, size: row.sizeBytes, createdAt: row.createdAt.toISOString() };
    if (row.textContent !== null) return { ...base, text: row.textContent };
    const object = await this.deps.s3.client.send(new GetObjectCommand({ Bucket: this.deps.s3.bucket, Key: row.objectKey }));
    const bytes = await object.Body!.transformToByteArray();
    return { ...base, contentBase64: Buffer.from(bytes).toString('base64') };
  }
}

const line = (value: Record<string, unknown>) => `${JSON.stringify(value)}\n`;
