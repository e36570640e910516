import fp from 'fastify-plugin';
import pg from 'pg';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';

export type Database<TSchema extends Record<string, unknown> = Record<string, never>> = NodePgDatabase<TSchema>;

export interface DatabaseOptions {
  url: string;
  poolMax: number;
  applicationName: string;
  /** Statement timeout in ms, so one stuck query cannot hold a connection forever. */
  statementTimeoutMs?: number;
}

export function createPool(options: DatabaseOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.poolMax,
    application_name: options.applicationName,
    statement_timeout: options.statementTimeoutMs ?? 30_000,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
  });
  // An idle client losing its connection (PostgreSQL restart) must not crash the process.
  pool.on('error', () => undefined);
  return pool;
}

declare module 'fastify' {
  interface FastifyInstance {
    pg: pg.Pool;
  }
}

/** Decorates the app with its PostgreSQL pool; readiness depends on it; closed on app close. */
export const databasePlugin = fp<{ pool: pg.Pool }>(
  async (app, { pool }) => {
    app.decorate('pg', pool);
    app.readiness.add({
      name: 'postgres',
      critical: true,
      check: async () => {
        await pool.query('select 1');
      },
    });
    app.addHook('onClose', async () => {
      await pool.end();
    });
  },
  { name: 'database', dependencies: ['readiness'] },
);

export function createDatabase<TSchema extends Record<string, unknown>>(pool: pg.Pool, schema: TSchema): Database<TSchema> {
  return drizzle(pool, { schema });
}
