import { createRequire } from 'node:module';

/** kafkajs's wait before it looks at queued requests again when it is not throttled (its CHECK_PENDING_REQUESTS_INTERVAL). */
const RECHECK_MS = 10;

/** The part of kafkajs's per-connection RequestQueue this fix touches. */
export interface RequestQueueLike {
  pending: unknown[];
  throttledUntil: number;
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  checkPendingRequests(): void;
  scheduleCheckPendingRequests(): void;
}

/**
 * kafkajs 2.2.4 schedules its next look at queued requests after every look, queue empty or
 * not, and with a negative delay when nothing throttles it: every broker connection runs a 1 ms
 * timer loop for as long as it is open (kafkajs issues #1556 and #1704, unfixed upstream). With a
 * producer and a few consumers per service that was 40-75 ms of CPU per second per idle service on
 * our machines, and the same work taken from the requests under load.
 *
 * Here the look is scheduled only while requests wait: at the end of the client-side throttle if
 * there is one, after RECHECK_MS otherwise (kafkajs's own interval). A queue with nothing waiting
 * needs no timer: the next request that has to wait schedules one, and a finished request looks
 * at the queue itself (fulfillRequest).
 */
export function scheduleCheckWhenPending(this: RequestQueueLike): void {
  if (this.throttleCheckTimeoutId || this.pending.length === 0) return;
  const throttled = this.throttledUntil - Date.now();
  this.throttleCheckTimeoutId = setTimeout(
    () => {
      this.throttleCheckTimeoutId = null;
      this.checkPendingRequests();
    },
    throttled > 0 ? throttled : RECHECK_MS,
  );
}

const require = createRequire(import.meta.url);

/** kafkajs's RequestQueue class, whose prototype every connection's queue shares. */
export function kafkajsRequestQueue(): { prototype: RequestQueueLike } {
  return require('kafkajs/src/network/requestQueue/index.js') as { prototype: RequestQueueLike };
}

/** Applies the fix to kafkajs (once per process; createKafka calls it). */
export function fixKafkajsIdleLoop(): void {
  const { prototype } = kafkajsRequestQueue();
  if (typeof prototype.scheduleCheckPendingRequests !== 'function')
    throw new Error('kafkajs RequestQueue has no scheduleCheckPendingRequests: review request-queue-fix.ts for this kafkajs version');
  prototype.scheduleCheckPendingRequests = scheduleCheckWhenPending;
}
