import { mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

interface S3rverInstance {
  run(): Promise<{ address: string; port: number }>;
  close(): Promise<void>;
}
type S3rverClass = new (options: Record<string, unknown>) => S3rverInstance;

export interface LocalS3 {
  endpoint: string;
  bucket: string;
  stop(): Promise<void>;
}

/** An S3-compatible server (s3rver) on loopback with the bucket created; data in `directory`. */
export async function startLocalS3(options: { port: number; directory: string; bucket: string }): Promise<LocalS3> {
  await mkdir(options.directory, { recursive: true });
  const S3rver = require('s3rver') as S3rverClass;
  const server = new S3rver({
    port: options.port,
    address: '127.0.0.1',
    silent: true,
    directory: options.directory,
    configureBuckets: [{ name: options.bucket }],
    allowMismatchedSignatures: true,
  });
  let info: { address: string; port: number };
  try {
    info = await server.run();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new Error(`port ${options.port} (local S3 server) is already in use; set S3_ENDPOINT or DEV_S3_PORT`, { cause: error });
    }
    throw error;
  }
  return {
    endpoint: `http://127.0.0.1:${info.port}`,
    bucket: options.bucket,
    stop: () => server.close(),
  };
}
