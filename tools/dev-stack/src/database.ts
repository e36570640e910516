import pg from 'pg';
import { runMigrations } from '@vivier/service-kit';
import { SERVICES, migrationsFolder, type BackendService } from './paths';

export const roleOf = (service: BackendService) => `${service}_svc`;

function quoteIdent(name: string): string {
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`unsafe identifier ${JSON.stringify(name)}`);
  return `"${name}"`;
}

function withDatabase(url: string, database: string, user?: { name: string; password: string }): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  if (user) {
    u.username = user.name;
    u.password = user.password;
  }
  return u.toString();
}

export async function checkPostgres(adminUrl: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query('select 1');
  } catch (error) {
    throw new Error(
      `PostgreSQL is not reachable at ${redact(adminUrl)}: ${(error as Error).message}. ` +
        'Start it (see docs/dev-stack.md) or set DATABASE_URL.',
      { cause: error },
    );
  } finally {
    await client.end().catch(() => undefined);
  }
}

export function redact(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.toString();
}

export interface ProvisionedDatabase {
  database: string;
  adminUrl: string;
  /** Each service's own connection string (its role, its schema only). */
  serviceUrls: Record<BackendService, string>;
}

/**
 * Creates the database, one login role per service and one schema per service owned by that
 * role. Nobody else gets rights on a schema, so a service reading another's tables fails with
 * "permission denied". Safe to run again.
 */
export async function provisionDatabase(adminUrl: string, database: string, password: string): Promise<ProvisionedDatabase> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    const exists = await admin.query('select 1 from pg_database where datname = $1', [database]);
    if (exists.rowCount === 0) await admin.query(`create database ${quoteIdent(database)}`);
    for (const service of SERVICES) {
      const role = roleOf(service);
      const found = await admin.query('select 1 from pg_roles where rolname = $1', [role]);
      const verb = found.rowCount === 0 ? 'create' : 'alter';
      await admin.query(`${verb} role ${quoteIdent(role)} login password '${password.replace(/'/g, "''")}'`);
    }
  } finally {
    await admin.end();
  }

  const dbAdminUrl = withDatabase(adminUrl, database);
  const db = new pg.Client({ connectionString: dbAdminUrl });
  await db.connect();
  try {
    await db.query(`revoke all on database ${quoteIdent(database)} from public`);
    await db.query('revoke all on schema public from public');
    for (const service of SERVICES) {
      const role = quoteIdent(roleOf(service));
      await db.query(`grant connect, temporary on database ${quoteIdent(database)} to ${role}`);
      await db.query(`create schema if not exists ${quoteIdent(service)} authorization ${role}`);
      await db.query(`alter schema ${quoteIdent(service)} owner to ${role}`);
      await db.query(`alter role ${role} in database ${quoteIdent(database)} set search_path = ${quoteIdent(service)}`);
    }
  } finally {
    await db.end();
  }

  const serviceUrls = Object.fromEntries(
    SERVICES.map((s) => [s, withDatabase(adminUrl, database, { name: roleOf(s), password })]),
  ) as Record<BackendService, string>;
  return { database, adminUrl: dbAdminUrl, serviceUrls };
}

/** Each service's migrations, applied as that service's own role. */
export async function migrateAll(serviceUrls: Record<BackendService, string>): Promise<Record<BackendService, number>> {
  const applied = {} as Record<BackendService, number>;
  for (const service of SERVICES) {
    const pool = new pg.Pool({ connectionString: serviceUrls[service], max: 1 });
    try {
      const result = await runMigrations(pool, { schema: service, folder: migrationsFolder(service) });
      applied[service] = result.applied.length;
    } finally {
      await pool.end();
    }
  }
  return applied;
}

export async function dropDatabase(adminUrl: string, database: string): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`drop database if exists ${quoteIdent(database)} with (force)`);
  } finally {
    await admin.end();
  }
}

/** Test databases are named vivier_test_<epoch seconds>_<pid>; drop those left by runs that died. */
export async function dropStaleTestDatabases(adminUrl: string, olderThanSeconds: number): Promise<string[]> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  const dropped: string[] = [];
  try {
    const rows = await admin.query<{ datname: string }>("select datname from pg_database where datname like 'vivier\\_test\\_%'");
    const now = Math.floor(Date.now() / 1000);
    for (const { datname } of rows.rows) {
      const started = Number(/^vivier_test_(\d+)_/.exec(datname)?.[1]);
      if (Number.isFinite(started) && now - started > olderThanSeconds) {
        await admin.query(`drop database if exists ${quoteIdent(datname)} with (force)`);
        dropped.push(datname);
      }
    }
  } finally {
    await admin.end();
  }
  return dropped;
}
