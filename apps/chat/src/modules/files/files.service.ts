import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import type { MultipartFile } from '@fastify/multipart';
import type { FastifyBaseLogger } from 'fastify';
import { cutText } from '@vivier/contracts';
import { HttpProblem, problems, type Identity } from '@vivier/service-kit';
import type { ChatDatabase } from '../../database';
import { newId } from '../../ids';
import { filesRepository, type FileRow } from './files.repository';

/** An uploaded file read whole and checked, not stored yet. */
export interface ReadFile {
  name: string;
  contentType: string;
  data: Buffer;
  /** The UTF-8 text of a text file; null for an image. */
  text: string | null;
}

export interface FileView {
  id: string;
  name: string;
  size: number;
  contentType: string;
  createdAt: string;
}

export function fileView(row: FileRow): FileView {
  return { id: row.id, name: row.name, size: row.sizeBytes, contentType: row.contentType, createdAt: row.createdAt.toISOString() };
}

/** What a model context takes from an attachment. */
export interface ContextAttachment {
  id: string;
  name: string;
  contentType: string;
  /** Text files: their text. */
  text?: string;
  /** Images: the bytes, base64. */
  image?: string;
}

const IMAGE_SIGNATURES: Record<string, (b: Buffer) => boolean> = {
  'image/png': (b) => b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])),
  'image/jpeg': (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff,
  'image/gif': (b) => b.subarray(0, 6).toString('latin1') === 'GIF87a' || b.subarray(0, 6).toString('latin1') === 'GIF89a',
  'image/webp': (b) => b.subarray(0, 4).toString('latin1') === 'RIFF' && b.subarray(8, 12).toString('latin1') === 'WEBP',
};

export const isImage = (contentType: string) => contentType.startsWith('image/');

/**
 * Attachments: uploads checked for size and type (an image must really be one, a text file must
 * be UTF-8), stored in S3 under `files/<user>/<id>` with a row in chat.files. Text files keep their
 * text in the row too; they go into the model's context, images go to providers as image parts.
 */
export class FilesService {
  private readonly files;

  constructor(
    private readonly deps: { db: ChatDatabase; s3: { client: S3Client; bucket: string }; maxBytes: number; allowedTypes: Set<string>; log: FastifyBaseLogger },
  ) {
    this.files = filesRepository(deps.db);
  }

  /** Media type without parameters, lower-cased. */
  private normalise(mimetype: string): string {
    return (mimetype.split(';')[0] ?? '').trim().toLowerCase();
  }

  checkType(mimetype: string): string {
    const type = this.normalise(mimetype);
    if (!this.deps.allowedTypes.has(type)) {
      throw problems.unsupportedMediaType(`Files of type "${type || 'unknown'}" are not accepted. Accepted: ${[...this.deps.allowedTypes].join(', ')}.`);
    }
    return type;
  }

  /**
   * Reads one file part whole and checks it (size, type, image signature, UTF-8 text): nothing is
   * stored yet, so the rest of the form can still be refused (see `store`).
   */
  async read(part: MultipartFile): Promise<ReadFile> {
    const contentType = this.checkType(part.mimetype);
    let data: Buffer;
    try {
      data = await part.toBuffer();
    } catch (error) {
      if ((error as { code?: string }).code === 'FST_REQ_FILE_TOO_LARGE') throw this.tooLarge();
      throw error;
    }
    if (part.file.truncated || data.length > this.deps.maxBytes) throw this.tooLarge();
    let text: string | null = null;
    if (isImage(contentType)) {
      const matches = IMAGE_SIGNATURES[contentType];
      if (matches && !matches(data)) throw problems.unsupportedMediaType(`The file is not a ${contentType} image.`);
    } else {
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(data);
      } catch {
        throw problems.unsupportedMediaType('Text files must be UTF-8.');
      }
      // Valid UTF-8, but no text PostgreSQL can store (and no text file): refused before S3.
      if (text.includes('\u0000')) throw new HttpProblem(400, 'invalid_text', 'Text files may not contain NUL characters.');
    }
    const name = cutText([...(part.filename || 'file')].filter((c) => c.charCodeAt(0) >= 0x20).join(''), 255) || 'file';
    return { name, contentType, data, text };
  }

  /** Stores a file `read` accepted: the object in S3, then its row (no row, no object). */
  async store(user: Identity, { name, contentType, data, text }: ReadFile): Promise<FileView> {
    const { id, createdAt } = newId();
    const objectKey = `files/${user.sub}/${id}`;
    await this.deps.s3.client.send(
      new PutObjectCommand({ Bucket: this.deps.s3.bucket, Key: objectKey, Body: data, ContentType: contentType, ContentLength: data.length }),
    );
    const row: FileRow = { id, userId: user.sub, name, contentType, sizeBytes: data.length, objectKey, textContent: text, createdAt };
    try {
      await this.files.insert(row);
    } catch (error) {
      // No row, no object: an object nobody can name would stay (and be billed) for good.
      await this.deps.s3.client
        .send(new DeleteObjectCommand({ Bucket: this.deps.s3.bucket, Key: objectKey }))
        .catch((deleteError: unknown) => this.deps.log.error({ err: deleteError, objectKey }, 'could not delete the object of an upload whose row was not stored'));
      throw error;
    }
    return fileView(row);
  }

  tooLarge() {
    return problems.tooLarge(`Files may be at most ${this.deps.maxBytes} bytes.`);
  }

  /** The caller's file, or 404 (another user's file is not found either). */
  async require(user: Identity, id: string): Promise<FileRow> {
    const row = await this.files.find(user.sub, id);
    if (!row) throw problems.notFound('No such file.');
    return row;
  }

  async content(user: Identity, id: string): Promise<{ row: FileRow; body: Readable }> {
    const row = await this.require(user, id);
    const object = await this.deps.s3.client.send(new GetObjectCommand({ Bucket: this.deps.s3.bucket, Key: row.objectKey }));
    return { row, body: object.Body as Readable };
  }

  /** Attachments of a message being sent: text from the row, images from S3. 404 for a file that is not the caller's. */
  async forContext(user: Identity, ids: string[]): Promise<ContextAttachment[]> {
    if (ids.length === 0) return [];
    const rows = await this.files.findMany(user.sub, ids);
    const byId = new Map(rows.map((r) => [r.id, r]));
    const missing = ids.find((id) => !byId.has(id));
    if (missing) throw problems.notFound(`No such file: ${missing}.`);
    return Promise.all(
      ids.map(async (id) => {
        const row = byId.get(id)!;
        const base = { id, name: row.name, contentType: row.contentType };
        if (!isImage(row.contentType)) return { ...base, text: row.textContent ?? '' };
        const object = await this.deps.s3.client.send(new GetObjectCommand({ Bucket: this.deps.s3.bucket, Key: row.objectKey }));
        const bytes = Buffer.from(await object.Body!.transformToByteArray());
        return { ...base, image: bytes.toString('base64') };
      }),
    );
  }

  /** Text of text attachments of earlier messages (for their place in a context). */
  async texts(userId: string, ids: string[]): Promise<Map<string, FileRow>> {
    const rows = await this.files.findMany(userId, ids);
    return new Map(rows.map((r) => [r.id, r]));
  }
}
