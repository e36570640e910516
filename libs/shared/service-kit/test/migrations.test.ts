import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runMigrations } from '../src/migrations';
import { testAdminDatabaseUrl } from '../src/testing';

/** A drizzle-kit style folder: meta/_journal.json and one NNNN_tag.sql per migration. */
function migrationFolder(migrations: Array<[tag: string, sql: string]>): string {
  const folder = mkdtempSync(path.join(os.tmpdir(), 'vivier-migrations-'));
  mkdirSync(path.join(folder, 'meta'));
  writeFileSync(
    path.join(folder, 'meta', '_journal.json'),
    JSON.stringify({ entries: migrations.map(([tag], idx) => ({ idx, tag, when: idx })) }),
  );
  for (const [tag, sql] of migrations) writeFileSync(path.join(folder, `${tag}.sql`), sql);
  return folder;
}

describe('migrations', () => {
  let pool: pg.Pool;
  const schema = `mig_${randomBytes(4).toString('hex')}`;

  beforeAll(async () => {
    pool = new pg.Pool({ connectionString: testAdminDatabaseUrl(), max: 2 });
    await pool.query(`create schema "${schema}"`);
  });
  afterAll(async () => {
    await pool.query(`drop schema if exists "${schema}" cascade`);
    await pool.end();
  });

  it('runs a migration marked no-transaction outside one (CREATE INDEX CONCURRENTLY), once', async () => {
    const folder = migrationFolder([
      ['0000_init', `CREATE TABLE "${schema}"."outbox" (id bigint primary key, published_at timestamptz);`],
      [
        '0001_concurrent_index',
        `-- vivier:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS "${schema}"."outbox_pending_idx";--> statement-breakpoint\n` +
          `CREATE INDEX CONCURRENTLY "outbox_pending_idx" ON "${schema}"."outbox" (id) WHERE published_at is null;`,
      ],
    ]);
    expect(await runMigrations(pool, { schema, folder })).toEqual({ applied: ['0000_init', '0001_concurrent_index'], skipped: 0 });
    const { rows } = await pool.query(
      `select i.indisvalid from pg_index i join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = $1 and c.relname = 'outbox_pending_idx'`,
      [schema],
    );
    expect(rows).toEqual([{ indisvalid: true }]);
    expect(await runMigrations(pool, { schema, folder })).toEqual({ applied: [], skipped: 2 });
  });

  it('keeps a failing ordinary migration all or nothing', async () => {
    const folder = migrationFolder([
      ['0000_half', `CREATE TABLE "${schema}"."half" (id int);--> statement-breakpoint\nSELECT * FROM "${schema}"."missing";`],
    ]);
    await expect(runMigrations(pool, { schema, folder })).rejects.toThrow(/migration 0000_half of schema mig_\w+ failed/);
    const { rows } = await pool.query(`select to_regclass($1) as t`, [`"${schema}"."half"`]);
    expect(rows[0].t).toBeNull();
  });
});
