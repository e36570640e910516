import { Type } from '@sinclair/typebox';
import { createPool, databaseConfigProperties, loadConfig, runMigrations, startProcess } from '@vivier/service-kit';
import { WORKER_SCHEMA, workerMigrationsFolder } from '@vivier/db-worker';

// `npm run migrate -w @vivier/worker`: applies the worker schema's migrations as the service's own role.
startProcess(async () => {
  const config = loadConfig('worker-migrate', Type.Object(databaseConfigProperties));
  const pool = createPool({ url: config.DATABASE_URL, poolMax: 1, applicationName: 'worker-migrate' });
  try {
    const result = await runMigrations(pool, { schema: WORKER_SCHEMA, folder: workerMigrationsFolder });
    process.stdout.write(`worker: applied ${result.applied.length} migration(s), ${result.skipped} already applied\n`);
  } finally {
    await pool.end();
  }
});
