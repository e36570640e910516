import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { dropDatabase, dropStaleTestDatabases, migrateAll, provisionDatabase } from './database';
import { DEFAULT_ADMIN_DATABASE_URL, startInfrastructure } from './stack';
import { SERVICES } from './paths';
import { LOCAL_DATABASE } from '@vivier/service-kit';

/**
 * Infrastructure for one test run: a fresh database (vivier_test_<epoch>_<pid>) with every
 * service's schema and role, a Redis key prefix of its own, a fresh dev Kafka broker and a local
 * S3 server in a temporary folder. Everything is removed at the end; databases left behind by
 * runs that were killed are dropped by the next run.
 */
export async function startTestInfrastructure(): Promise<{ env: Record<string, string>; stop(): Promise<void> }> {
  const adminUrl = process.env.DATABASE_URL || DEFAULT_ADMIN_DATABASE_URL;
  await dropStaleTestDatabases(adminUrl, 6 * 3600).catch(() => []);
  const runId = `${Math.floor(Date.now() / 1000)}_${process.pid}`;
  const database = `vivier_test_${runId}`;
  const s3Directory = await mkdtemp(path.join(os.tmpdir(), 'vivier-s3-'));
  const infra = await startInfrastructure({ database, s3Directory, s3Port: 0 });
  const redisPrefix = `vivier-test:${runId}:`;
  const env: Record<string, string> = {
    ...infra.env,
    VIVIER_TEST_INFRA: '1',
    VIVIER_TEST_RUN_ID: runId,
    VIVIER_TEST_REDIS_PREFIX: redisPrefix,
    VIVIER_TEST_DATABASE_ADMIN_URL: infra.adminDatabaseUrl,
  };
  for (const service of SERVICES) env[`VIVIER_TEST_DATABASE_URL_${service.toUpperCase()}`] = infra.serviceDatabaseUrls[service];

  return {
    env,
    stop: async () => {
      await infra.stop();
      await dropDatabase(adminUrl, database).catch(() => undefined);
      await rm(s3Directory, { recursive: true, force: true });
      const redis = new Redis(infra.env.REDIS_URL!, { lazyConnect: true, maxRetriesPerRequest: 0 });
      try {
        await redis.connect();
        let cursor = '0';
        do {
          const [next, keys] = await redis.scan(cursor, 'MATCH', `${redisPrefix}*`, 'COUNT', 1000);
          if (keys.length) await redis.del(...keys);
          cursor = next;
        } while (cursor !== '0');
      } catch {
        // Redis keys of a test run are namespaced; leftovers cannot disturb the next run.
      } finally {
        redis.disconnect();
      }
    },
  };
}

/**
 * A database of its own for a test whose services must not share the run's database: every
 * service's relay takes the schema's leadership per database, so a service talking to another
 * Kafka (its own dev broker) would otherwise publish the run's outbox rows to the wrong broker,
 * or hold them back while its broker is down. Migrated like the run's; drop() removes it.
 */
export async function isolatedDatabase(label: string): Promise<{ serviceUrls: Record<(typeof SERVICES)[number], string>; drop(): Promise<void> }> {
  const adminUrl = process.env.VIVIER_TEST_DATABASE_ADMIN_URL || process.env.DATABASE_URL || DEFAULT_ADMIN_DATABASE_URL;
  if (!/^[a-z0-9_]+$/.test(label)) throw new Error(`unsafe database label ${label}`);
  const database = `vivier_test_${process.env.VIVIER_TEST_RUN_ID ?? `${Math.floor(Date.now() / 1000)}_${process.pid}`}_${label}`;
  const db = await provisionDatabase(adminUrl, database, process.env.VIVIER_DB_PASSWORD || LOCAL_DATABASE.password);
  await migrateAll(db.serviceUrls);
  return { serviceUrls: db.serviceUrls, drop: () => dropDatabase(adminUrl, database) };
}

/** Drops a database a test created under its own name (a stack started with VIVIER_DB_NAME). */
export async function dropTestDatabase(database: string): Promise<void> {
  const adminUrl = process.env.VIVIER_TEST_DATABASE_ADMIN_URL || process.env.DATABASE_URL || DEFAULT_ADMIN_DATABASE_URL;
  await dropDatabase(adminUrl, database);
}
