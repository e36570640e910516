import { deleteInBatches, type HousekeepingTask } from '@vivier/messaging';

/**
 * Sessions past any use, and their refresh tokens (ON DELETE CASCADE): expired for a day (a token
 * of an expired session is refused either way), or revoked for `revokedRetentionDays` (kept that
 * long so the session list and audits can still show them). Run by the relay leader.
 */
export function sessionsHousekeeping(options: { revokedRetentionDays: number }): HousekeepingTask {
  return {
    name: 'purge-sessions',
    run: async (client, stopping) => ({
      sessions: await deleteInBatches(
        client,
        `delete from auth.sessions where id in (
           select id from auth.sessions
           where expires_at < now() - interval '1 day'
              or revoked_at < now() - make_interval(days => $1)
           limit $2)`,
        [options.revokedRetentionDays],
        stopping,
      ),
    }),
  };
}
