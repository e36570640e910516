import { randomBytes } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { pgSchema } from 'drizzle-orm/pg-core';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import { createPool } from '@vivier/service-kit';
import { messagingTables } from '../tables';

const ROOT = fileURLToPath(new URL('../../../../../', import.meta.url));

export interface TestSchema {
  schema: string;
  pool: pg.Pool;
  db: NodePgDatabase;
  tables: ReturnType<typeof messagingTables>;
  drop(): Promise<void>;
}

/**
 * A throwaway schema with the messaging tables, made from the worker schema's real migrations
 * (the outbox DDL every service shares), for tests of the messaging library itself.
 */
export async function createTestSchema(adminUrl: string): Promise<TestSchema> {
  const schema = `mt_${randomBytes(4).toString('hex')}`;
  // The services' own pool (service-kit), so tests meet what they do when a connection drops.
  const pool = createPool({ url: adminUrl, poolMax: 8, applicationName: 'vivier-messaging-test' });
  const folder = path.join(ROOT, 'libs/db/worker/migrations');
  const files = (await readdir(folder)).filter((f) => /^(000[01]_.*|\d{4}_outbox_.*)\.sql$/.test(f)).sort();
  const client = await pool.connect();
  try {
    for (const file of files) {
      const sql = (await readFile(path.join(folder, file), 'utf8'))
        .replaceAll('"worker"', `"${schema}"`)
        .replaceAll('vivier_outbox_worker', `vivier_outbox_${schema}`);
      for (const statement of sql.split('--> statement-breakpoint')) if (statement.trim()) await client.query(statement);
    }
  } finally {
    client.release();
  }
  return {
    schema,
    pool,
    db: drizzle(pool),
    tables: messagingTables(pgSchema(schema)),
    drop: async () => {
      await pool.query(`drop schema if exists "${schema}" cascade`);
      await pool.end();
    },
  };
}
