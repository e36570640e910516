import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from '@aws-sdk/client-s3';

/** S3 wants parts of 5 MiB at least (the last excepted); 8 MiB keeps the part count of a 10 GB object under S3's 10,000. */
export const EXPORT_PART_BYTES = 8 * 1024 * 1024;

export interface ObjectTarget {
  client: S3Client;
  bucket: string;
  key: string;
  contentType: string;
  contentDisposition?: string;
}

/**
 * One S3 object written from text as it comes, holding at most one part in memory (plus the
 * piece being written): a single PutObject when the whole is smaller than a part, a multipart
 * upload otherwise. `abort()` gives up a multipart upload begun (S3 would keep its parts, and
 * bill them, until a lifecycle rule removes them).
 */
export class S3ObjectWriter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private uploadId: string | undefined;
  private readonly parts: CompletedPart[] = [];
  /** Bytes written so far. */
  size = 0;

  constructor(
    private readonly target: ObjectTarget,
    private readonly signal?: AbortSignal,
    private readonly partBytes = EXPORT_PART_BYTES,
  ) {}

  async write(text: string): Promise<void> {
    const bytes = Buffer.from(text, 'utf8');
    this.pending.push(bytes);
    this.pendingBytes += bytes.length;
    this.size += bytes.length;
    if (this.pendingBytes >= this.partBytes) await this.uploadPart();
  }

  /** Completes the object; returns its size in bytes. */
  async end(): Promise<number> {
    const { client, bucket, key, contentType, contentDisposition } = this.target;
    if (this.uploadId === undefined) {
      await client.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: key,
          Body: Buffer.concat(this.pending, this.pendingBytes),
          ContentType: contentType,
          ...(contentDisposition ? { ContentDisposition: contentDisposition } : {}),
        }),
        this.options(),
      );
      this.pending = [];
      this.pendingBytes = 0;
      return this.size;
    }
    if (this.pendingBytes > 0) await this.uploadPart();
    await client.send(
      new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: this.uploadId, MultipartUpload: { Parts: this.parts } }),
      this.options(),
    );
    this.uploadId = undefined;
    return this.size;
  }

  /** Gives up a multipart upload under way, if any (without the handler's signal: it may be what aborted). */
  async abort(): Promise<void> {
    const uploadId = this.uploadId;
    this.uploadId = undefined;
    this.pending = [];
    this.pendingBytes = 0;
    if (uploadId === undefined) return;
    await this.target.client.send(new AbortMultipartUploadCommand({ Bucket: this.target.bucket, Key: this.target.key, UploadId: uploadId }), {
      abortSignal: AbortSignal.timeout(10_000),
    });
  }

  private async uploadPart(): Promise<void> {
    const { client, bucket, key, contentType, contentDisposition } = this.target;
    const body = Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    if (this.uploadId === undefined) {
      const created = await client.send(
        new CreateMultipartUploadCommand({
          Bucket: bucket,
          Key: key,
          ContentType: contentType,
          ...(contentDisposition ? { ContentDisposition: contentDisposition } : {}),
        }),
        this.options(),
      );
      if (!created.UploadId) throw new Error('S3 began a multipart upload without an upload id');
      this.uploadId = created.UploadId;
    }
    const partNumber = this.parts.length + 1;
    const uploaded = await client.send(
      new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: this.uploadId, PartNumber: partNumber, Body: body, ContentLength: body.length }),
      this.options(),
    );
    this.parts.push({ PartNumber: partNumber, ETag: uploaded.ETag });
  }

  private options(): { abortSignal?: AbortSignal } {
    return this.signal ? { abortSignal: this.signal } : {};
  }
}
