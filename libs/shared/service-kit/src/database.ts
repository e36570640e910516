import fp from 'fastify-plugin';
import pg from 'pg';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import { Histogram, type Registry } from 'prom-client';
import { endSpan, otelContext, SpanKind, startChildSpan, tracingEnabled } from './tracing';
import { closeStep } from './shutdown-steps';

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
    // statement_timeout is enforced by the server: when the server vanishes without closing the
    // connection (a failover moving its address, a network partition), a query in flight would
    // wait for good, holding its pool slot. TCP keepalive probes, from 10 s of silence on, end such
    // a connection (after the kernel's probes: net.ipv4.tcp_keepalive_intvl × _probes).
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
  });
  // An idle client losing its connection (PostgreSQL restart) must not crash the process.
  pool.on('error', () => undefined);
  // Nor one in use: node-postgres emits 'error' on a checked-out client whose connection ends
  // between queries (a backend terminated, a failover mid-transaction), and the pool listens only
  // to idle ones. The caller's query or transaction fails on its own; the client is not reused.
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}

declare module 'fastify' {
  interface FastifyInstance {
    pg: pg.Pool;
  }
}

const FIRST_WORD = /^\s*([a-z]+)/i;
const MAIN_AFTER_CTE = /\)\s*(select|insert|update|delete)\b/gi;

/** `select`, `insert`, … of a statement (for `with …`, the statement after the CTEs), for metrics and span names. */
export function statementOperation(text: string): string {
  let word = FIRST_WORD.exec(text)?.[1]?.toLowerCase() ?? 'other';
  if (word === 'with') word = [...text.matchAll(MAIN_AFTER_CTE)].at(-1)?.[1]?.toLowerCase() ?? 'other';
  return ['select', 'insert', 'update', 'delete', 'begin', 'commit', 'rollback', 'savepoint', 'release', 'listen', 'unlisten', 'notify', 'set', 'lock', 'copy', 'create', 'alter', 'drop', 'truncate', 'vacuum', 'analyze'].includes(word) ? word : 'other';
}

type QueryFn = (...args: unknown[]) => unknown;

/**
 * Times every query of the pool's clients (`vivier_db_query_duration_seconds` by operation) and,
 * inside a trace, gives each a CLIENT span with the statement (never the values).
 */
export function instrumentPool(pool: pg.Pool, registry: Registry): void {
  const existing = registry.getSingleMetric('vivier_db_query_duration_seconds') as Histogram<'operation' | 'outcome'> | undefined;
  const duration =
    existing ??
    new Histogram({
      name: 'vivier_db_query_duration_seconds',
      help: 'PostgreSQL query time seen by the service (queueing for a connection excluded), by operation and outcome.',
      labelNames: ['operation', 'outcome'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    });
  // A query waiting for a connection resumes from whichever request released one: bind the
  // waiting callback to its caller's context, so its spans stay in the caller's trace.
  const connect = pool.connect.bind(pool) as (callback?: unknown) => unknown;
  (pool as unknown as { connect: (callback?: unknown) => unknown }).connect = (callback?: unknown) =>
    typeof callback === 'function' && tracingEnabled() ? connect(otelContext.bind(otelContext.active(), callback as (...a: unknown[]) => unknown)) : connect(callback);
  pool.on('connect', (client) => {
    const original = client.query.bind(client) as QueryFn;
    (client as unknown as { query: QueryFn }).query = (...args: unknown[]) => {
      const first = args[0] as string | { text?: string; submit?: unknown } | undefined;
      // Submittables (cursors, streams) manage their own lifecycle: passed through untimed.
      if (first === undefined || (typeof first === 'object' && typeof first.submit === 'function')) return original(...args);
      const text = typeof first === 'string' ? first : (first.text ?? '');
      const operation = statementOperation(text);
      const started = performance.now();
      const traced = startChildSpan(operation.toUpperCase(), {
        kind: SpanKind.CLIENT,
        attributes: { 'db.system.name': 'postgresql', 'db.operation.name': operation, 'db.query.text': text.length > 2000 ? `${text.slice(0, 2000)}…` : text },
      });
      const finish = (error?: unknown) => {
        duration.observe({ operation, outcome: error === undefined ? 'ok' : 'error' }, (performance.now() - started) / 1000);
        if (traced) endSpan(traced.span, error ?? undefined);
      };
      const callback = typeof args[args.length - 1] === 'function' ? (args.pop() as (error: unknown, result: unknown) => void) : undefined;
      if (callback) {
        return original(...args, (error: unknown, result: unknown) => {
          finish(error ?? undefined);
          callback(error, result);
        });
      }
      return (original(...args) as Promise<unknown>).then(
        (result) => {
          finish();
          return result;
        },
        (error: unknown) => {
          finish(error);
          throw error;
        },
      );
    };
  });
}

/** Decorates the app with its PostgreSQL pool; readiness depends on it; closed on app close. */
export const databasePlugin = fp<{ pool: pg.Pool }>(
  async (app, { pool }) => {
    instrumentPool(pool, app.metrics);
    app.decorate('pg', pool);
    app.readiness.add({
      name: 'postgres',
      critical: true,
      check: async () => {
        await pool.query('select 1');
      },
    });
    // Waits for every connection checked out of the pool to be released.
    closeStep(app, 'postgres pool', () => pool.end());
  },
  { name: 'database', dependencies: ['readiness'] },
);

export function createDatabase<TSchema extends Record<string, unknown>>(pool: pg.Pool, schema: TSchema): Database<TSchema> {
  return drizzle(pool, { schema });
}
