import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';

/** A reply event as chat publishes it on the user's channel (apps/chat reply-streams.service.ts). */
export interface ReplyEnvelope {
  seq: number;
  type: 'message' | 'delta' | 'usage' | 'done' | 'error';
  data: unknown;
  messageId: string;
  chatId: string;
}

type Listener = (envelope: ReplyEnvelope) => void;

const REPLY_EVENT_TYPES = new Set(['message', 'delta', 'usage', 'done', 'error']);

/** What chat publishes, checked: anything else on the channel is dropped, not sent to sockets. */
function isReplyEnvelope(value: unknown): value is ReplyEnvelope {
  if (value === null || typeof value !== 'object') return false;
  const e = value as Record<string, unknown>;
  return Number.isSafeInteger(e.seq) && typeof e.type === 'string' && REPLY_EVENT_TYPES.has(e.type) && typeof e.messageId === 'string' && typeof e.chatId === 'string';
}

/**
 * This gateway instance's one Redis subscriber: the channel of every user with a socket here
 * (`<prefix>user:<userId>`, where chat publishes each reply event), subscribed once however
 * many sockets the user has, dropped with the last one. Every gateway instance subscribes for its
 * own sockets, so a reply reaches the user's sockets on every instance.
 */
export class UserChannels {
  private readonly subscriber: Redis;
  private readonly listeners = new Map<string, Set<Listener>>();

  constructor(
    redis: Redis,
    private readonly channelOf: (userId: string) => string,
    private readonly log: FastifyBaseLogger,
  ) {
    this.subscriber = redis.duplicate({ enableOfflineQueue: true, maxRetriesPerRequest: null, connectionName: 'gateway-sockets' });
    this.subscriber.on('error', (error: Error) => this.log.debug({ err: error }, 'redis subscriber error'));
    this.subscriber.on('message', (channel: string, message: string) => {
      const set = this.listeners.get(channel);
      if (!set) return;
      let envelope: unknown;
      try {
        envelope = JSON.parse(message);
      } catch {
        envelope = undefined;
      }
      if (!isReplyEnvelope(envelope)) {
        this.log.warn({ channel }, 'dropped a message on a user channel that is not a reply event');
        return;
      }
      // One socket's failure is its own: the user's other sockets still get the event, and an
      // exception never escapes into the Redis client's event loop.
      for (const listener of set) {
        try {
          listener(envelope);
        } catch (error) {
          this.log.warn({ err: error, channel }, 'a socket could not take a reply event');
        }
      }
    });
  }

  /** Resolves once the subscription is confirmed; returns the unsubscribe function. */
  async follow(userId: string, listener: Listener): Promise<() => void> {
    const channel = this.channelOf(userId);
    let set = this.listeners.get(channel);
    const first = !set;
    if (!set) this.listeners.set(channel, (set = new Set()));
    set.add(listener);
    const stop = () => {
      const current = this.listeners.get(channel);
      if (!current) return;
      current.delete(listener);
      if (current.size === 0) {
        this.listeners.delete(channel);
        this.subscriber.unsubscribe(channel).catch(() => undefined);
      }
    };
    try {
      // Never before the connection is ready: a SUBSCRIBE during ioredis' ready check breaks it.
      await this.ready();
      if (first) await this.subscriber.subscribe(channel);
      else await this.subscriber.ping();
    } catch (error) {
      stop();
      throw error;
    }
    return stop;
  }

  private ready(): Promise<void> {
    if (this.subscriber.status === 'ready') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('redis is not available')), 3000);
      this.subscriber.once('ready', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  close(): void {
    this.listeners.clear();
    this.subscriber.disconnect();
  }
}
