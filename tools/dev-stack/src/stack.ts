import path from 'node:path';
import { checkPostgres, migrateAll, provisionDatabase, redact } from './database';
import { checkRedis, ensurePortFree, startKafka } from './infra';
import { startLocalS3 } from './object-storage';
import { DATA_DIR, SERVICES, type BackendService } from './paths';
import { LOCAL_DATABASE } from '@vivier/service-kit';

export const DEFAULT_ADMIN_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/postgres';
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

export interface Infrastructure {
  /** Variables every service gets. */
  env: Record<string, string>;
  serviceDatabaseUrls: Record<BackendService, string>;
  adminDatabaseUrl: string;
  database: string;
  kafkaBrokers: string[];
  stop(): Promise<void>;
  log: string[];
}

export interface InfrastructureOptions {
  /** Database to create; for tests a fresh one per run. */
  database: string;
  /** Where the local S3 server keeps its files. */
  s3Directory?: string;
  s3Port?: number;
  kafkaBrokers?: number;
  env?: NodeJS.ProcessEnv;
  say?: (line: string) => void;
}

/**
 * Brings up what the services need. Anything the environment already names (DATABASE_URL as an
 * admin connection, REDIS_URL, KAFKA_BROKERS, S3_ENDPOINT) is used as it is; the rest is started
 * locally: the dev Kafka broker and an S3 server. PostgreSQL and Redis are expected to run.
 */
export async function startInfrastructure(options: InfrastructureOptions): Promise<Infrastructure> {
  const env = options.env ?? process.env;
  const say = options.say ?? (() => undefined);
  const stops: Array<() => Promise<void>> = [];
  const log: string[] = [];
  const stop = async () => {
    for (const fn of stops.reverse()) await fn().catch(() => undefined);
  };
  try {
    const adminUrl = env.DATABASE_URL || DEFAULT_ADMIN_DATABASE_URL;
    await checkPostgres(adminUrl);
    const password = env.VIVIER_DB_PASSWORD || LOCAL_DATABASE.password;
    const db = await provisionDatabase(adminUrl, options.database, password);
    const applied = await migrateAll(db.serviceUrls);
    say(`postgres  ${redact(db.adminUrl)} (schemas ${SERVICES.join(', ')}; migrations applied: ${JSON.stringify(applied)})`);

    const redisUrl = env.REDIS_URL || DEFAULT_REDIS_URL;
    await checkRedis(redisUrl);
    say(`redis     ${redisUrl}`);

    let kafkaBrokers: string[];
    // The dev broker cannot run idempotent producers (see DEV-STACK.md); a real Kafka can.
    let idempotent = env.KAFKA_PRODUCER_IDEMPOTENT || 'true';
    // The dev broker holds every fetch for the consumer's whole wait and every rebalance for a
    // whole session: short values keep events flowing and group joins quick (a real Kafka needs neither).
    const consumerEnv: Record<string, string> = {};
    if (env.KAFKA_BROKERS) {
      kafkaBrokers = env.KAFKA_BROKERS.split(',');
      say(`kafka     ${env.KAFKA_BROKERS} (from KAFKA_BROKERS)`);
    } else {
      const kafka = await startKafka(options.kafkaBrokers ?? 1);
      stops.push(() => kafka.stop());
      kafkaBrokers = kafka.bootstrap;
      idempotent = 'false';
      consumerEnv.CONSUMER_MAX_WAIT_MS = env.CONSUMER_MAX_WAIT_MS || '50';
      consumerEnv.CONSUMER_SESSION_TIMEOUT_MS = env.CONSUMER_SESSION_TIMEOUT_MS || '6000';
      say(`kafka     ${kafkaBrokers.join(',')} (dev broker, ${kafka.brokers} broker(s))`);
    }

    const bucket = env.S3_BUCKET || 'vivier-files';
    let s3Endpoint: string;
    if (env.S3_ENDPOINT) {
      s3Endpoint = env.S3_ENDPOINT;
      say(`s3        ${s3Endpoint} (from S3_ENDPOINT)`);
    } else {
      const s3 = await startLocalS3({
        port: options.s3Port ?? Number(env.DEV_S3_PORT || 4569),
        directory: options.s3Directory ?? path.join(DATA_DIR, 's3'),
        bucket,
      });
      stops.push(() => s3.stop());
      s3Endpoint = s3.endpoint;
      say(`s3        ${s3Endpoint} bucket ${bucket} (local s3rver)`);
    }

    return {
      env: {
        REDIS_URL: redisUrl,
        KAFKA_BROKERS: kafkaBrokers.join(','),
        KAFKA_PRODUCER_IDEMPOTENT: idempotent,
        ...consumerEnv,
        S3_ENDPOINT: s3Endpoint,
        S3_BUCKET: bucket,
        AWS_ACCESS_KEY_ID: env.AWS_ACCESS_KEY_ID || 'S3RVER',
        AWS_SECRET_ACCESS_KEY: env.AWS_SECRET_ACCESS_KEY || 'S3RVER',
        AWS_REGION: env.AWS_REGION || 'us-east-1',
      },
      serviceDatabaseUrls: db.serviceUrls,
      adminDatabaseUrl: db.adminUrl,
      database: options.database,
      kafkaBrokers,
      stop,
      log,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

export { ensurePortFree };
