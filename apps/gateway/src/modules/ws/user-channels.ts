import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import { subscriberOptions } from '@vivier/service-kit';

/** A reply event as chat publishes it on the user's channel (apps/chat reply-streams.service.ts). */
export interface ReplyEnvelope {
  seq: number;
  type: 'message' | 'delta' | 'usage' | 'done' | 'error';
  data: unknown;
  messageId: string;
  chatId: string;
}

type Listener = (envelope: ReplyEnvelope) => void;
interface Follower {
  listener: Listener;
  onGap: () => void;
  /** Its subscription failed: it is told when the subscriber connects, even the first time. */
  waiting?: boolean;
}

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
 *
 * A follower stays registered while Redis is away: each time the subscriber connects again every
 * followed channel is subscribed again (a follower whose subscription failed gets its events from
 * then on), and followers are told that events may have been missed meanwhile (`onGap`), since
 * pub/sub keeps nothing for a subscriber that is not there.
 */
export class UserChannels {
  private readonly subscriber: Redis;
  private readonly listeners = new Map<string, Set<Follower>>();
  /** Each followed channel's SUBSCRIBE, shared by every follower of it; forgotten when it failed. */
  private readonly subscriptions = new Map<string, Promise<void>>();
  private connectedBefore = false;

  constructor(
    redis: Redis,
    private readonly channelOf: (userId: string) => string,
    private readonly log: FastifyBaseLogger,
  ) {
    this.subscriber = redis.duplicate(subscriberOptions('gateway-sockets'));
    this.subscriber.on('error', (error: Error) => this.log.debug({ err: error }, 'redis subscriber error'));
    this.subscriber.on('ready', () => this.reconnected());
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
      for (const follower of set) {
        try {
          follower.listener(envelope);
        } catch (error) {
          this.log.warn({ err: error, channel }, 'a socket could not take a reply event');
        }
      }
    });
  }

  /**
   * Follows the user's channel. Resolves once the subscription is confirmed, with the unfollow
   * function; rejects when Redis does not confirm it within a few seconds, with the follower still
   * registered (see the class): call `stop` on the error to give up instead.
   */
  async follow(userId: string, listener: Listener, onGap: () => void = () => undefined): Promise<() => void> {
    const channel = this.channelOf(userId);
    let set = this.listeners.get(channel);
    if (!set) this.listeners.set(channel, (set = new Set()));
    const follower: Follower = { listener, onGap };
    set.add(follower);
    const stop = () => {
      const current = this.listeners.get(channel);
      if (!current) return;
      current.delete(follower);
      if (current.size === 0) {
        this.listeners.delete(channel);
        this.subscriptions.delete(channel);
        this.subscriber.unsubscribe(channel).catch(() => undefined);
      }
    };
    try {
      await this.subscribed(channel);
    } catch (error) {
      follower.waiting = true;
      // Its own error: the subscription's is shared by every follower of the channel.
      throw Object.assign(new Error(`cannot subscribe to the user's channel: ${(error as Error).message}`, { cause: error }), { stop });
    }
    return stop;
  }

  private subscribed(channel: string): Promise<void> {
    let subscription = this.subscriptions.get(channel);
    if (!subscription) {
      // Never before the connection is ready: a SUBSCRIBE during ioredis' ready check breaks it.
      const pending = this.ready().then(() => this.subscriber.subscribe(channel)).then(() => undefined);
      subscription = pending;
      this.subscriptions.set(channel, pending);
      pending.catch(() => {
        if (this.subscriptions.get(channel) === pending) this.subscriptions.delete(channel);
      });
    }
    return subscription;
  }

  /**
   * The subscriber is (again) connected: every followed channel is subscribed again, and once that
   * is confirmed its followers are told events may have been missed (on a reconnect, or when their
   * own subscription had failed). A subscription that fails leaves them waiting for the next one.
   */
  private reconnected(): void {
    const again = this.connectedBefore;
    this.connectedBefore = true;
    for (const [channel, set] of this.listeners) {
      const told = [...set].filter((follower) => again || follower.waiting);
      const renewed = this.subscriber.subscribe(channel).then(() => undefined);
      this.subscriptions.set(channel, renewed);
      renewed.then(
        () => {
          for (const follower of told) {
            if (!set.has(follower)) continue;
            follower.waiting = false;
            try {
              follower.onGap();
            } catch (error) {
              this.log.warn({ err: error, channel }, 'a socket could not be told of a gap');
            }
          }
        },
        () => {
          if (this.subscriptions.get(channel) === renewed) this.subscriptions.delete(channel);
          for (const follower of told) follower.waiting = true;
        },
      );
    }
  }

  private ready(): Promise<void> {
    if (this.subscriber.status === 'ready') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.subscriber.off('ready', onReady);
        reject(new Error('redis is not available'));
      }, 3000);
      this.subscriber.once('ready', onReady);
    });
  }

  close(): void {
    this.listeners.clear();
    this.subscriptions.clear();
    this.subscriber.disconnect();
  }
}
