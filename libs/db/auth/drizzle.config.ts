import { defineConfig } from 'drizzle-kit';

// Generate a migration after changing src/schema.ts:
//   npm run db:generate -w @vivier/db-auth
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/schema.ts',
  out: './migrations',
  schemaFilter: ['auth'],
});
