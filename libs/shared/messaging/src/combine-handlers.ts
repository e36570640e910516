import type { EventHandler, EventHandlers } from './consumer';

/**
 * Handler maps merged by event type, for a consumer whose modules handle some of the same events:
 * several handlers of one type run in order, in the same transaction (spreading the maps would
 * keep only the last).
 */
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
