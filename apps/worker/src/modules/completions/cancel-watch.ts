import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';

/**
 * Cancels of replies queued with `async: true`, as chat asks for them (its ReplyStreams): a
 * message on the channel `<prefix>chat:cancel` (the message id) for whoever is producing the reply
 * now, and a flag `chat:reply:<id>:cancel` for a job not started yet, or a message this instance's
 * subscriber missed while it reconnected. The key goes through the client's key prefix; the channel
 * carries the prefix itself (ioredis does not prefix channels).
 *
 * A provider call watched here is aborted within a round trip of the message. Redis being away
 * costs only that: the reply is produced, and chat counts its usage and ignores its text.
 */
export class CancelWatch {
  private subscriber: Redis | undefined;
  private readonly running = new Map<string, AbortController>();
  private readonly channel: string;

  constructor(private readonly deps: { redis: Redis; keyPrefix: string; log: FastifyBaseLogger }) {
    this.channel = `${deps.keyPrefix}chat:cancel`;
  }

  start(): void {
    const subscriber = this.deps.redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null, connectionName: 'worker-cancels' });
    this.subscriber = subscriber;
    subscriber.on('error', (error: Error) => this.deps.log.debug({ err: error }, 'redis cancel subscriber error'));
    subscriber.on('message', (_channel: string, messageId: string) => this.cancel(messageId));
    // SUBSCRIBE only once ready: sent during ioredis' ready check it makes the connection drop.
    const subscribe = () => subscriber.subscribe(this.channel).catch((error: unknown) => this.deps.log.warn({ err: error }, 'cannot subscribe the cancel channel'));
    if (subscriber.status === 'ready') void subscribe();
    else subscriber.once('ready', () => void subscribe());
  }

  stop(): void {
    this.subscriber?.disconnect();
    this.subscriber = undefined;
  }

  /** Whether chat asked to stop this reply; false when Redis cannot say (the reply is then produced). */
  async requested(messageId: string): Promise<boolean> {
    try {
      return (await this.deps.redis.exists(`chat:reply:${messageId}:cancel`)) === 1;
    } catch (error) {
      this.deps.log.warn({ err: error, messageId }, 'cannot read a cancel flag');
      return false;
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
  async recheck(messageId: string): Promise<void> {
    if (this.running.has(messageId) && (await this.requested(messageId))) this.cancel(messageId);
  }
}
