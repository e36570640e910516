import fp from 'fastify-plugin';
import { HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { Type, type TProperties } from '@sinclair/typebox';
import { Env } from './config';
import { closeStep } from './shutdown-steps';

export const s3ConfigProperties = {
  S3_ENDPOINT: Type.Optional(
    Type.String({ format: 'url', description: 'S3-compatible endpoint (MinIO, s3rver); unset means AWS S3.' }),
  ),
  S3_BUCKET: Env.string('vivier-files', 'Bucket for attachments and exports.'),
  S3_FORCE_PATH_STYLE: Env.bool(true, 'Path-style addressing (needed by MinIO and s3rver).'),
  AWS_REGION: Env.string('us-east-1', 'S3 region.'),
  AWS_ACCESS_KEY_ID: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        "S3 access key id. Unset: with S3_ENDPOINT the local server's S3RVER, without it the AWS SDK's own credential chain (web identity / IRSA, container and instance roles, AWS_PROFILE).",
    }),
  ),
  AWS_SECRET_ACCESS_KEY: Type.Optional(Type.String({ minLength: 1, description: 'S3 secret access key (with AWS_ACCESS_KEY_ID).' })),
  AWS_SESSION_TOKEN: Type.Optional(Type.String({ minLength: 1, description: 'Session token of temporary (STS) credentials.' })),
} satisfies TProperties;

export interface S3Settings {
  S3_ENDPOINT?: string | undefined;
  S3_BUCKET: string;
  S3_FORCE_PATH_STYLE: boolean;
  AWS_REGION: string;
  AWS_ACCESS_KEY_ID?: string | undefined;
  AWS_SECRET_ACCESS_KEY?: string | undefined;
  AWS_SESSION_TOKEN?: string | undefined;
}

/** Static keys when given (with a session token for temporary ones); else the local server's, or the AWS chain. */
function credentialsOf(settings: S3Settings) {
  if (settings.AWS_ACCESS_KEY_ID && settings.AWS_SECRET_ACCESS_KEY) {
    return {
      accessKeyId: settings.AWS_ACCESS_KEY_ID,
      secretAccessKey: settings.AWS_SECRET_ACCESS_KEY,
      ...(settings.AWS_SESSION_TOKEN ? { sessionToken: settings.AWS_SESSION_TOKEN } : {}),
    };
  }
  // A local S3-compatible server (npm start's s3rver) takes these; AWS itself gets the SDK's chain.
  return settings.S3_ENDPOINT ? { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } : undefined;
}

export function createS3(settings: S3Settings): S3Client {
  const credentials = credentialsOf(settings);
  return new S3Client({
    region: settings.AWS_REGION,
    ...(settings.S3_ENDPOINT ? { endpoint: settings.S3_ENDPOINT } : {}),
    forcePathStyle: settings.S3_FORCE_PATH_STYLE,
    ...(credentials ? { credentials } : {}),
  });
}

declare module 'fastify' {
  interface FastifyInstance {
    s3: { client: S3Client; bucket: string };
  }
}

export const objectStoragePlugin = fp<{ client: S3Client; bucket: string }>(
  async (app, { client, bucket }) => {
    app.decorate('s3', { client, bucket });
    app.readiness.add({
      name: 's3',
      critical: true,
      check: async () => {
        await client.send(new HeadBucketCommand({ Bucket: bucket }));
      },
    });
    closeStep(app, 's3 client', async () => client.destroy());
  },
  { name: 'object-storage', dependencies: ['readiness'] },
);
