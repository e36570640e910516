#!/usr/bin/env node
// Minimal S3 client for backup.sh and restore.sh, on the repository's @aws-sdk/client-s3:
//   node infra/backup/s3.mjs put s3://bucket/key file      upload (single PUT, up to 5 GiB)
//   node infra/backup/s3.mjs get s3://bucket/key file      download
//   node infra/backup/s3.mjs ls  s3://bucket/prefix/       list keys under a prefix, one a line
// Configuration as the services': S3_ENDPOINT (MinIO; unset = AWS), S3_FORCE_PATH_STYLE,
// AWS_REGION, and credentials from the standard AWS chain (AWS_ACCESS_KEY_ID, ..., profiles, IAM
// roles). BACKUP_S3_SSE=AES256 or aws:kms asks for server-side encryption of uploads.
import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';

function parseUri(uri) {
  const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(uri ?? '');
  if (!match) throw new Error(`not an s3:// URI: ${uri}`);
  return { Bucket: match[1], Key: match[2] };
}

function client() {
  const endpoint = process.env.S3_ENDPOINT || undefined;
  return new S3Client({
    region: process.env.AWS_REGION || 'us-east-1',
    endpoint,
    forcePathStyle: process.env.S3_FORCE_PATH_STYLE ? process.env.S3_FORCE_PATH_STYLE === 'true' : Boolean(endpoint),
    // Plain (not aws-chunked) uploads, which every S3-compatible server understands; the dumps'
    // integrity is checked with the SHA-256 of the manifest instead.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

async function main([command, uri, file]) {
  const s3 = client();
  const { Bucket, Key } = parseUri(uri);
  if (command === 'put') {
    const { size } = await stat(file);
    const sse = process.env.BACKUP_S3_SSE;
    await s3.send(
      new PutObjectCommand({
        Bucket,
        Key,
        Body: createReadStream(file),
        ContentLength: size,
        ...(sse ? { ServerSideEncryption: sse } : {}),
      }),
    );
    return;
  }
  if (command === 'get') {
    const response = await s3.send(new GetObjectCommand({ Bucket, Key }));
    await pipeline(response.Body, createWriteStream(file));
    return;
  }
  if (command === 'ls') {
    let ContinuationToken;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: Key, ContinuationToken }));
      for (const object of page.Contents ?? []) process.stdout.write(`${object.Key}\n`);
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
    return;
  }
  throw new Error('usage: s3.mjs put|get|ls s3://bucket/key [file]');
}

// `s3.mjs ls … | head -1` closes the pipe early: not an error.
process.stdout.on('error', (error) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

main(process.argv.slice(2)).catch((error) => {
  process.stderr.write(`s3.mjs: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
