import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import { subscriberOptions } from '@vivier/service-kit';
import type { ReplyEnvelope } from './reply-events';
import { parseEnvelope, type ReplyStreams } from './reply-streams.service';

type Listener = (envelope: ReplyEnvelope) => void;

const SUBSCRIBE_TIMEOUT_MS = 2000;

/**
 * This instance's one Redis subscriber connection: the cancel channel (any instance may be asked
 * to stop a reply this one runs), the provider settings channel, and, while someone resumes a reply here, the channel of its
 * user. Channels are subscribed once however many listeners they have.
 */
export class ReplyHub {
  private readonly subscriber: Redis;
  private readonly listeners = new Map<string, Set<Listener>>();
  /** Channels this instance always follows (cancels, provider changes), with their handlers. */
  private readonly handlers = new Map<string, (message: string) => void>();

  constructor(
    redis: Redis,
    private readonly streams: ReplyStreams,
    private readonly log: FastifyBaseLogger,
  ) {
    // Subscriptions wait for a connection (and ioredis re-subscribes after a reconnect).
    this.subscriber = redis.duplicate(subscriberOptions('chat-subscriber'));
    this.subscriber.on('error', (error: Error) => this.log.debug({ err: error }, 'redis subscriber error'));
    this.subscriber.on('message', (channel: string, message: string) => this.dispatch(channel, message));
  }

  /** Calls `handler` with every message of `channel` once start() has subscribed it. */
  handle(channel: string, handler: (message: string) => void): void {
    this.handlers.set(channel, handler);
  }

  /**
   * Subscribes the cancel channel and those given to handle() once the connection is ready
   * (ioredis re-subscribes after a reconnect). Never before: a SUBSCRIBE sent while ioredis still
   * runs its ready check makes that check fail and the connection drop, and cancels published
   * meanwhile would be lost.
   */
  start(onCancel: (messageId: string) => void): void {
    this.handlers.set(this.streams.cancelChannel, onCancel);
    void this.whenReady()
      .then(() => this.subscriber.subscribe(...this.handlers.keys()))
      .catch((error: unknown) => this.log.warn({ err: error }, 'cannot subscribe the cancel and provider channels'));
  }

  /** Resolves once the subscriber connection is ready (see start()). */
  private whenReady(): Promise<void> {
    if (this.subscriber.status === 'ready') return Promise.resolve();
    if (this.subscriber.status === 'end') return Promise.reject(new Error('the redis subscriber is closed'));
    return new Promise((resolve) => this.subscriber.once('ready', () => resolve()));
  }

  private dispatch(channel: string, message: string): void {
    const handler = this.handlers.get(channel);
    if (handler) {
      handler(message);
      return;
    }
    const listeners = this.listeners.get(channel);
    if (!listeners) return;
    let envelope: ReplyEnvelope;
    try {
      envelope = parseEnvelope(message);
    } catch {
      return;
    }
    for (const listener of listeners) listener(envelope);
  }

  /**
   * Calls `listener` with every reply event of `userId` from the moment the subscription is
   * confirmed (so a caller that reads the stream afterwards misses nothing). Throws when Redis
   * does not confirm in time. Returns the unsubscribe function.
   */
  async followUser(userId: string, listener: Listener): Promise<() => void> {
    const channel = this.streams.userChannel(userId);
    let set = this.listeners.get(channel);
    const first = !set;
    if (!set) {
      set = new Set();
      this.listeners.set(channel, set);
    }
    set.add(listener);
    const unsubscribe = () => {
      const current = this.listeners.get(channel);
      if (!current) return;
      current.delete(listener);
      if (current.size === 0) {
        this.listeners.delete(channel);
        this.subscriber.unsubscribe(channel).catch(() => undefined);
      }
    };
    try {
      // A second listener of the channel still waits for a round trip, so the first one's
      // subscription is confirmed by the time this resolves (Redis answers in order).
      await withTimeout(
        this.whenReady().then(() => (first ? this.subscriber.subscribe(channel) : this.subscriber.ping())),
        SUBSCRIBE_TIMEOUT_MS,
      );
    } catch (error) {
      unsubscribe();
      throw error;
    }
    return unsubscribe;
  }

  async close(): Promise<void> {
    this.listeners.clear();
    this.subscriber.disconnect();
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`redis did not answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
