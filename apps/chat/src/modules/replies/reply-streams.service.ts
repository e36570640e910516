import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import type { ReplyEnvelope, ReplyEvent } from './reply-events';

// Redis as the reply's journal and fan-out. Keys go through the client's key prefix; pub/sub
// channels are not prefixed by ioredis, so they carry REDIS_KEY_PREFIX explicitly:
//
//   <prefix>chat:reply:<messageId>:events   stream, entry id `0-<seq>`, field `e` = envelope JSON
//   <prefix>chat:reply:<messageId>:lease    the instance running the reply (PX lease)
//   <prefix>chat:reply:<messageId>:cancel   a cancel asked for (PX), read with each lease renewal
//   channel <prefix>user:<userId>           every reply event of that user (envelope JSON)
//   channel <prefix>chat:cancel             message ids whose reply must stop (any chat instance, and the
//                                           worker for replies queued with `async: true`)

export const streamKey = (messageId: string) => `chat:reply:${messageId}:events`;
export const leaseKey = (messageId: string) => `chat:reply:${messageId}:lease`;
export const cancelKey = (messageId: string) => `chat:reply:${messageId}:cancel`;

/** How long the cancel flag of a queued reply lasts: its job can wait in its topic that long. */
export const QUEUED_CANCEL_FLAG_MS = 24 * 3_600_000;

export interface ReplyStreamsOptions {
  keyPrefix: string;
  maxEvents: number;
  retentionSeconds: number;
  /** TTL of a stream while its reply runs (refreshed with every batch). */
  runningTtlSeconds: number;
  leaseMs: number;
}

type Command = [string, ...Array<string | number>];

/**
 * Writes reply events to Redis and reads them back. Writes of one event loop turn go out in one
 * pipeline (one round trip however many replies are streaming), in order, so a stream never has
 * a later event without the earlier ones. Redis being away costs resumability, never the reply:
 * failed writes are logged and dropped.
 */
export class ReplyStreams {
  private pending: Command[] = [];
  private flushScheduled = false;
  private lastErrorLog = 0;

  constructor(
    private readonly redis: Redis,
    private readonly options: ReplyStreamsOptions,
    private readonly log: FastifyBaseLogger,
  ) {}

  userChannel(userId: string): string {
    return `${this.options.keyPrefix}user:${userId}`;
  }

  get cancelChannel(): string {
    return `${this.options.keyPrefix}chat:cancel`;
  }

  /** Appends an event to the reply's stream and publishes it to the user's channel. */
  append(envelope: ReplyEnvelope, userId: string, final = false): void {
    const json = JSON.stringify(envelope);
    const key = streamKey(envelope.messageId);
    this.pending.push(['xadd', key, 'MAXLEN', '~', this.options.maxEvents, `0-${envelope.seq}`, 'e', json]);
    this.pending.push(['expire', key, final ? this.options.retentionSeconds : this.options.runningTtlSeconds]);
    this.pending.push(['publish', this.userChannel(userId), json]);
    this.schedule();
  }

  private schedule(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => void this.flush());
  }

  /** Sends what is pending now; resolves when Redis answered (or failed). */
  async flush(): Promise<void> {
    this.flushScheduled = false;
    if (this.pending.length === 0) return;
    const commands = this.pending;
    this.pending = [];
    try {
      const results = await this.redis.pipeline(commands).exec();
      const failed = results?.find(([error]) => error);
      if (failed?.[0]) this.warn(failed[0]);
    } catch (error) {
      this.warn(error);
    }
  }

  private warn(error: unknown): void {
    const now = Date.now();
    if (now - this.lastErrorLog < 10_000) return;
    this.lastErrorLog = now;
    this.log.warn({ err: error }, 'reply events could not be written to Redis: resuming those replies falls back to the database');
  }

  /** Events after `after`, in order. Throws when Redis cannot answer. */
  async read(messageId: string, after: number): Promise<ReplyEvent[]> {
    const entries = await this.redis.xrange(streamKey(messageId), `(0-${after}`, '+');
    return entries.map(([, fields]) => parseEnvelope(fields[1] ?? '{}'));
  }

  /** Every event of the reply (for the sweeper), or [] when Redis cannot answer. */
  async readAll(messageId: string): Promise<ReplyEvent[]> {
    try {
      return await this.read(messageId, 0);
    } catch {
      return [];
    }
  }

  /** Takes the lease of a reply (sent with the next batch of writes). */
  setLease(messageId: string, owner: string): void {
    this.pending.push(['set', leaseKey(messageId), owner, 'PX', this.options.leaseMs]);
    this.schedule();
  }

  /**
   * Renews the leases of the replies running here, and returns those of them whose cancel was
   * asked for: the pub/sub message is the fast path, this flag the one a subscriber that was
   * reconnecting at that moment cannot miss.
   */
  async renewLeases(messageIds: string[], owner: string): Promise<string[]> {
    if (messageIds.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const id of messageIds) pipeline.set(leaseKey(id), owner, 'PX', this.options.leaseMs).exists(cancelKey(id));
    const results = (await pipeline.exec()) ?? [];
    return messageIds.filter((_, i) => results[i * 2 + 1]?.[1] === 1);
  }

  releaseLease(messageId: string): void {
    this.pending.push(['del', leaseKey(messageId)]);
    this.schedule();
  }

  /** Which of these replies have a live lease. Throws when Redis cannot answer. */
  async leasesAlive(messageIds: string[]): Promise<boolean[]> {
    if (messageIds.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const id of messageIds) pipeline.exists(leaseKey(id));
    const results = (await pipeline.exec()) ?? [];
    return results.map(([error, value]) => {
      if (error) throw error;
      return value === 1;
    });
  }

  /**
   * Asks whichever instance runs the reply to stop it: a flag it reads within a lease renewal, and
   * a message it gets at once. The worker, which produces replies queued with `async: true`,
   * listens too; for those the flag lasts `flagMs`, since a job can wait in its topic for a while
   * and the worker reads the flag before it calls the provider.
   */
  async publishCancel(messageId: string, flagMs = this.options.leaseMs * 2): Promise<void> {
    await this.redis
      .multi()
      .set(cancelKey(messageId), '1', 'PX', flagMs)
      .publish(this.cancelChannel, messageId)
      .exec();
  }
}

export function parseEnvelope(json: string): ReplyEnvelope {
  return JSON.parse(json) as ReplyEnvelope;
}
