import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import type { RoutedChatRequest } from '@vivier/providers';
import type { ChatMetrics } from '../../metrics';

export interface CachedReply {
  text: string;
  provider: string;
  model: string;
  usage: { promptTokens: number; completionTokens: number };
  finishReason: string;
}

const cacheKey = (hash: string) => `chat:cache:${hash}`;

/**
 * Replies to identical deterministic requests, in Redis (`<prefix>chat:cache:<sha256>`). Only a
 * request with temperature 0 is cacheable: same model id, same context (system prompt, history,
 * attachments, images), same parameters. Redis being away is a miss, never an error.
 */
export class ResponseCache {
  constructor(
    private readonly redis: Redis,
    private readonly ttlSeconds: number,
    private readonly metrics: ChatMetrics,
    private readonly log: FastifyBaseLogger,
  ) {}

  /** The cache key of a request, or undefined when it must not be cached. */
  keyOf(modelId: string, request: RoutedChatRequest): string | undefined {
    if (this.ttlSeconds === 0 || request.temperature !== 0) return undefined;
    const hash = createHash('sha256');
    hash.update(JSON.stringify({ v: 1, modelId, maxTokens: request.maxTokens ?? null, topP: request.topP ?? null, stop: request.stop ?? null }));
    for (const message of request.messages) hash.update(`\u0000${message.role}\u0000`).update(JSON.stringify(message.content));
    return hash.digest('hex');
  }

  async get(key: string): Promise<CachedReply | undefined> {
    try {
      const value = await this.redis.get(cacheKey(key));
      if (value) {
        this.metrics.cacheHits.inc();
        return JSON.parse(value) as CachedReply;
      }
    } catch (error) {
      this.log.debug({ err: error }, 'response cache unavailable');
    }
    this.metrics.cacheMisses.inc();
    return undefined;
  }

  async put(key: string, reply: CachedReply): Promise<void> {
    try {
      await this.redis.set(cacheKey(key), JSON.stringify(reply), 'EX', this.ttlSeconds);
    } catch (error) {
      this.log.debug({ err: error }, 'response cache unavailable');
    }
  }
}
