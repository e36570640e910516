import { CONSUMER_GROUPS, SUBSCRIPTIONS } from '@vivier/contracts';
import { combineHandlers, type ConsumerSpec, type EventHandlers } from '@vivier/messaging';

/**
 * The admin service's one consumer group: read models (users, totals, usage) and the audit log
 * from auth, chat, worker and admin events. Every effect is written in the consumer's transaction,
 * so runs of events are applied together (`applyInRuns`), and a redelivered event changes nothing.
 */
export function readModelsConsumer(...handlers: EventHandlers[]): ConsumerSpec {
  return {
    group: CONSUMER_GROUPS.admin,
    topics: [...SUBSCRIPTIONS.admin],
    handlers: combineHandlers(...handlers),
    applyInRuns: true,
  };
}
