import { Type } from '@sinclair/typebox';
import { createPool, databaseConfigProperties, loadConfig, runMigrations, startProcess } from '@vivier/service-kit';
import { AUTH_SCHEMA, authMigrationsFolder } from '@vivier/db-auth';

// `npm run migrate -w @vivier/auth`: applies the auth schema's migrations as the service's own role.
startProcess(async () => {
  const config = loadConfig('auth-migrate', Type.Object(databaseConfigProperties));
  const pool = createPool({ url: config.DATABASE_URL, poolMax: 1, applicationName: 'auth-migrate' });
  try {
    const result = await runMigrations(pool, { schema: AUTH_SCHEMA, folder: authMigrationsFolder });
    process.stdout.write(`auth: applied ${result.applied.length} migration(s), ${result.skipped} already applied\n`);
  } finally {
    await pool.end();
  }
});
