import { Type } from '@sinclair/typebox';
import { createPool, databaseConfigProperties, loadConfig, runMigrations, startProcess } from '@vivier/service-kit';
import { CHAT_SCHEMA, chatMigrationsFolder } from '@vivier/db-chat';

// `npm run migrate -w @vivier/chat`: applies the chat schema's migrations as the service's own role.
startProcess(async () => {
  const config = loadConfig('chat-migrate', Type.Object(databaseConfigProperties));
  const pool = createPool({ url: config.DATABASE_URL, poolMax: 1, applicationName: 'chat-migrate' });
  try {
    const result = await runMigrations(pool, { schema: CHAT_SCHEMA, folder: chatMigrationsFolder });
    process.stdout.write(`chat: applied ${result.applied.length} migration(s), ${result.skipped} already applied\n`);
  } finally {
    await pool.end();
  }
});
