import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import type { ResolvedModel, RoutedChatRequest } from '@vivier/providers';
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
 * request with temperature 0 is cacheable: same user, same model id and what it routes to, same
 * context (system prompt, history, attachments, images), same parameters. Redis being away is a
 * miss, never an error.
 *
 * Each user has a cache of their own: a reply marked `cached` for a prompt someone else sent
 * would tell that it was sent (and hand over their reply).
 */
export class ResponseCache {
  constructor(
    private readonly redis: Redis,
    private readonly ttlSeconds: number,
    private readonly metrics: ChatMetrics,
    private readonly log: FastifyBaseLogger,
  ) {}

  /** The cache key of a request, or undefined when it must not be cached. */
  keyOf(userId: string, model: ResolvedModel, request: RoutedChatRequest): string | undefined {
    if (this.ttlSeconds === 0 || request.temperature !== 0) return undefined;
    const hash = createHash('sha256');
    // What the model id routes to is part of the key: an alias pointed elsewhere answers anew.
    const routes = model.deployments.map((d) => `${d.provider}/${d.model}`);
    hash.update(JSON.stringify({ v: 2, userId, modelId: model.id, routes, maxTokens: request.maxTokens ?? null, topP: request.topP ?? null, stop: request.stop ?? null }));
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
