import { randomUUID } from 'node:crypto';
import { GetObjectCommand, HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { createS3 } from '@vivier/service-kit';
import { testEnv } from '@vivier/service-kit/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadWorkerConfig } from '../src/config';
import { S3ObjectWriter } from '../src/modules/exports/s3-object-writer';

// The writer against the local S3 server, with the commands it sends recorded on its client.

const MiB = 1024 * 1024;
let client: S3Client;
let bucket: string;
const sent: string[] = [];

beforeAll(() => {
  const config = loadWorkerConfig(testEnv('worker', {}));
  client = createS3(config);
  bucket = config.S3_BUCKET;
  client.middlewareStack.add(
    (next, context) => async (args) => {
      sent.push(String(context.commandName));
      return next(args);
    },
    { step: 'initialize', name: 'recordCommands' },
  );
});
afterAll(() => client.destroy());

const target = (key: string) => ({ client, bucket, key, contentType: 'application/x-ndjson' });

describe('S3ObjectWriter', () => {
  it('writes an object larger than a part as a multipart upload, never holding more than a part and a line', async () => {
    sent.length = 0;
    const key = `writer-test/${randomUUID()}.ndjson`;
    const writer = new S3ObjectWriter(target(key), undefined, 5 * MiB);
    const line = `${JSON.stringify({ type: 'file', contentBase64: 'A'.repeat(2 * MiB) })}\n`;
    for (let i = 0; i < 6; i++) await writer.write(line);
    await writer.write('{"type":"summary"}\n');
    const size = await writer.end();
    expect(size).toBe(6 * Buffer.byteLength(line) + 19);
    // Three lines make a part (6 MiB > 5 MiB), the summary is the small last one.
    expect(sent).toEqual(['CreateMultipartUploadCommand', 'UploadPartCommand', 'UploadPartCommand', 'UploadPartCommand', 'CompleteMultipartUploadCommand']);
    const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    expect(object.ContentType).toBe('application/x-ndjson');
    const text = await object.Body!.transformToString();
    expect(text).toBe(line.repeat(6) + '{"type":"summary"}\n');
  });

  it('writes a small object with one PutObject', async () => {
    sent.length = 0;
    const key = `writer-test/${randomUUID()}.ndjson`;
    const writer = new S3ObjectWriter(target(key), undefined, 5 * MiB);
    await writer.write('{"type":"export"}\n');
    expect(await writer.end()).toBe(18);
    expect(sent).toEqual(['PutObjectCommand']);
    expect((await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).ContentLength).toBe(18);
  });

  it('gives up a multipart upload under way when aborted: it asks S3 to drop the parts, and no object is left', async () => {
    sent.length = 0;
    const key = `writer-test/${randomUUID()}.ndjson`;
    const writer = new S3ObjectWriter(target(key), undefined, 5 * MiB);
    await writer.write('x'.repeat(6 * MiB));
    // s3rver does not implement AbortMultipartUpload (405); AWS S3 and MinIO do. What is checked
    // here is that the writer asks for it, and that nothing became an object.
    await writer.abort().catch((error: unknown) => expect((error as Error).name).toBe('MethodNotAllowed'));
    expect(sent).toEqual(['CreateMultipartUploadCommand', 'UploadPartCommand', 'AbortMultipartUploadCommand']);
    await expect(client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).rejects.toThrow();
  });
});
