import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import { subscribeChannel } from '@vivier/service-kit';

/** How long a read of a cancel flag may take before the job goes ahead without it. */
const FLAG_TIMEOUT_MS = 250;
/** How often the flags of the replies being produced are read (for a message the subscriber missed). */
const FLAG_POLL_MS = 1000;

/**
 * Cancels of replies queued with `async: true`, as chat asks for them (its ReplyStreams): a
 * message on the channel `<prefix>chat:cancel` (the message id) for whoever is producing the reply
 * now, and a flag `chat:reply:<id>:cancel` for a job not started yet, or a message this instance's
 * subscriber missed while it reconnected. The key goes through the client's key prefix; the channel
 * carries the prefix itself (ioredis does not prefix channels).
 *
 * A provider call watched here is aborted within a round trip of the message, or within a second
 * by the flag. Redis being away costs only that: the reply is produced, and chat counts its usage
 * and ignores its text.
 */
export class CancelWatch {
  private subscription: { close: () => void } | undefined;
  private sweep: NodeJS.Timeout | undefined;
  private readonly running = new Map<string, AbortController>();
  private readonly channel: string;

  constructor(private readonly deps: { redis: Redis; keyPrefix: string; log: FastifyBaseLogger }) {
    this.channel = `${deps.keyPrefix}chat:cancel`;
  }

  start(): void {
    this.subscription = subscribeChannel(this.deps.redis, {
      channel: this.channel,
      name: 'worker-cancels',
      log: this.deps.log,
      onMessage: (messageId) => this.cancel(messageId),
    });
    // Whatever the subscriber misses, the watched replies' flags are read every second.
    this.sweep = setInterval(() => {
      for (const messageId of this.running.keys()) void this.recheck(messageId);
    }, FLAG_POLL_MS);
    this.sweep.unref();
  }

  stop(): void {
    if (this.sweep) clearInterval(this.sweep);
    this.subscription?.close();
    this.subscription = undefined;
  }

  /** Whether chat asked to stop this reply; false when Redis cannot say (the reply is then produced). */
  async requested(messageId: string): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const answer = this.deps.redis.exists(`chat:reply:${messageId}:cancel`);
      answer.catch(() => undefined); // a late failure, once the wait is over, is nobody's to handle
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer from Redis within ${FLAG_TIMEOUT_MS} ms`)), FLAG_TIMEOUT_MS);
      });
      return (await Promise.race([answer, late])) === 1;
    } catch (error) {
      this.deps.log.warn({ err: error, messageId }, 'cannot read a cancel flag');
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  /** A signal that aborts when the reply is cancelled, until `done()`. */
  watch(messageId: string): { signal: AbortSignal; done: () => void } {
    const controller = new AbortController();
    this.running.set(messageId, controller);
    return {
      signal: controller.signal,
      done: () => {
        if (this.running.get(messageId) === controller) this.running.delete(messageId);
      },
    };
  }

  private cancel(messageId: string): void {
    const controller = this.running.get(messageId);
    if (!controller || controller.signal.aborted) return;
    this.deps.log.info({ messageId }, 'reply cancelled: aborting its provider call');
    controller.abort();
  }

  /** Checks the flag of a watched reply (for a message the subscriber may have missed). */
  private async recheck(messageId: string): Promise<void> {
    if (this.running.has(messageId) && (await this.requested(messageId))) this.cancel(messageId);
  }
}
