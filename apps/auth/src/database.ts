import type { Database } from '@vivier/service-kit';
import type { authTables } from '@vivier/db-auth';

/** The auth service's drizzle database (its own schema only). */
export type AuthDatabase = Database<typeof authTables>;

/** A transaction of that database. */
export type AuthTransaction = Parameters<Parameters<AuthDatabase['transaction']>[0]>[0];
