import { Type } from '@sinclair/typebox';
import { createPool, databaseConfigProperties, loadConfig, runMigrations, startProcess } from '@vivier/service-kit';
import { ADMIN_SCHEMA, adminMigrationsFolder } from '@vivier/db-admin';

// `npm run migrate -w @vivier/admin`: applies the admin schema's migrations as the service's own role.
startProcess(async () => {
  const config = loadConfig('admin-migrate', Type.Object(databaseConfigProperties));
  const pool = createPool({ url: config.DATABASE_URL, poolMax: 1, applicationName: 'admin-migrate' });
  try {
    const result = await runMigrations(pool, { schema: ADMIN_SCHEMA, folder: adminMigrationsFolder });
    process.stdout.write(`admin: applied ${result.applied.length} migration(s), ${result.skipped} already applied\n`);
  } finally {
    await pool.end();
  }
});
