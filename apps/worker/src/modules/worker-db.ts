import type { Database } from '@vivier/service-kit';
import type { workerTables } from '@vivier/db-worker';

/** The worker's drizzle database (its own schema only). */
export type WorkerDatabase = Database<typeof workerTables>;
