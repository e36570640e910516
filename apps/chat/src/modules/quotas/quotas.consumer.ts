import { EVENTS } from '@vivier/contracts';
import type { EventHandlers } from '@vivier/messaging';
import type { FastifyBaseLogger } from 'fastify';
import type { QuotasRepository } from './quotas.repository';

/**
 * `admin.events` `quota.set`: the user's monthly token quota (null: unlimited), applied in the
 * consumer's transaction with the event id, so a redelivery changes nothing. Events of one user
 * share a partition (keyed by user id), so the last one set wins.
 */
export function quotaHandlers(deps: { quotas: QuotasRepository; log: FastifyBaseLogger }): EventHandlers {
  return {
    [EVENTS.adminQuotaSet.type]: async (event, { tx }) => {
      const { userId, monthlyTokens } = event.data;
      await deps.quotas.setLimit(userId, monthlyTokens, tx);
      deps.log.info({ userId, monthlyTokens }, 'quota set by an administrator');
    },
  };
}
