import { CONSUMER_GROUPS, SUBSCRIPTIONS } from '@vivier/contracts';
import type { ConsumerSpec, EventHandler, EventHandlers } from '@vivier/messaging';

/** Handler maps merged by event type; several handlers of one type run in order, in the same transaction. */
export function combineHandlers(...maps: EventHandlers[]): EventHandlers {
  const byType = new Map<string, EventHandler[]>();
  for (const map of maps) {
    for (const [type, handler] of Object.entries(map)) {
      if (handler) byType.set(type, [...(byType.get(type) ?? []), handler as EventHandler]);
    }
  }
  const combined: Record<string, EventHandler> = {};
  for (const [type, handlers] of byType) {
    combined[type] =
      handlers.length === 1
        ? handlers[0]!
        : async (event, context) => {
            for (const handler of handlers) await handler(event, context);
          };
  }
  return combined as EventHandlers;
}

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
