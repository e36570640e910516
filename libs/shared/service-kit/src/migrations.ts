import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';

interface Journal {
  entries: Array<{ idx: number; tag: string; when: number }>;
}

const NO_TRANSACTION = /^\s*-- vivier:no-transaction\b/;

export interface MigrationResult {
  applied: string[];
  skipped: number;
}

/**
 * Applies a drizzle-kit migration folder (meta/_journal.json + NNNN_tag.sql) to one service schema.
 *
 * Why not drizzle's own migrator: it runs `CREATE SCHEMA IF NOT EXISTS`, which PostgreSQL refuses
 * to a role without CREATE on the database even when the schema exists, and each service role
 * must be able to migrate its own schema and nothing else. The journal table lives inside the
 * service's schema; an advisory lock keyed by the schema lets several replicas start at once.
 */
export async function runMigrations(pool: pg.Pool, options: { schema: string; folder: string }): Promise<MigrationResult> {
  const journal = JSON.parse(await readFile(path.join(options.folder, 'meta', '_journal.json'), 'utf8')) as Journal;
  const table = `"${options.schema}"."schema_migrations"`;
  const ownSchemaCreation = new RegExp(`^CREATE SCHEMA (IF NOT EXISTS )?"${options.schema}";?$`, 'i');
  const client = await pool.connect();
  const applied: string[] = [];
  let skipped = 0;
  try {
    await client.query('select pg_advisory_lock(hashtext($1))', [`vivier-migrations:${options.schema}`]);
    await client.query(
      `create table if not exists ${table} (tag text primary key, hash text not null, applied_at timestamptz not null default now())`,
    );
    const done = new Map(
      (await client.query<{ tag: string; hash: string }>(`select tag, hash from ${table}`)).rows.map((r) => [r.tag, r.hash]),
    );
    for (const entry of [...journal.entries].sort((a, b) => a.idx - b.idx)) {
      const sql = await readFile(path.join(options.folder, `${entry.tag}.sql`), 'utf8');
      const hash = createHash('sha256').update(sql).digest('hex');
      const previous = done.get(entry.tag);
      if (previous !== undefined) {
        if (previous !== hash) {
          throw new Error(`migration ${entry.tag} of schema ${options.schema} was changed after it was applied`);
        }
        skipped += 1;
        continue;
      }
      // A migration that starts with `-- vivier:no-transaction` runs statement by statement,
      // outside a transaction: CREATE INDEX CONCURRENTLY cannot run in one, and building an index
      // on a busy table (the outbox takes a row with every turn) must not block its writes. Such
      // a migration must be safe to run again after a failure (DROP INDEX CONCURRENTLY IF EXISTS
      // first: a failed concurrent build leaves an invalid index behind).
      const transactional = !NO_TRANSACTION.test(sql);
      if (transactional) await client.query('begin');
      try {
        for (const statement of sql.split('--> statement-breakpoint')) {
          // The schema itself is provisioned by the operator (with its owner role); drizzle-kit
          // still writes CREATE SCHEMA into the first migration.
          if (!statement.trim() || ownSchemaCreation.test(statement.trim())) continue;
          await client.query(statement);
        }
        await client.query(`insert into ${table} (tag, hash) values ($1, $2)`, [entry.tag, hash]);
        if (transactional) await client.query('commit');
        applied.push(entry.tag);
      } catch (error) {
        if (transactional) await client.query('rollback');
        throw new Error(`migration ${entry.tag} of schema ${options.schema} failed: ${(error as Error).message}`, {
          cause: error,
        });
      }
    }
  } finally {
    await client.query('select pg_advisory_unlock(hashtext($1))', [`vivier-migrations:${options.schema}`]).catch(() => undefined);
    client.release();
  }
  return { applied, skipped };
}
