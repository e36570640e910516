import { afterEach, describe, expect, it } from 'vitest';
import type { S3Client } from '@aws-sdk/client-s3';
import { createS3 } from './object-storage';

const base = { S3_BUCKET: 'vivier-files', S3_FORCE_PATH_STYLE: true, AWS_REGION: 'us-east-1' };
const credentialsOf = (client: S3Client) => client.config.credentials();
const saved = { ...process.env };

afterEach(() => {
  for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN']) {
    if (saved[name] === undefined) delete process.env[name];
    else process.env[name] = saved[name];
  }
});

describe('S3 credentials', () => {
  it('uses the keys given, with the session token of temporary credentials', async () => {
    const client = createS3({ ...base, AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'secret', AWS_SESSION_TOKEN: 'session' });
    expect(await credentialsOf(client)).toMatchObject({ accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret', sessionToken: 'session' });
  });

  it("uses the local server's keys for an S3-compatible endpoint given none", async () => {
    expect(await credentialsOf(createS3({ ...base, S3_ENDPOINT: 'http://127.0.0.1:4569' }))).toMatchObject({ accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' });
  });

  it("leaves AWS itself to the SDK's credential chain (roles, web identity, profiles, the environment)", async () => {
    process.env.AWS_ACCESS_KEY_ID = 'FROM_THE_CHAIN';
    process.env.AWS_SECRET_ACCESS_KEY = 'chain secret';
    process.env.AWS_SESSION_TOKEN = 'chain session';
    expect(await credentialsOf(createS3(base))).toMatchObject({ accessKeyId: 'FROM_THE_CHAIN', sessionToken: 'chain session' });
  });
});
