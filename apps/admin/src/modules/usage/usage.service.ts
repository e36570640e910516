import { problems } from '@vivier/service-kit';
import type { ChatMessageCompletedData, ChatMessageUsageRecordedData } from '@vivier/contracts';
import type { Executor } from '@vivier/messaging';
import { estimatePercentile, latencyBucketOf } from './latency-histogram';
import type { PriceTable } from './price-table';
import { addSums, emptySums, type GroupBy, type ReplyMetrics, type UsageFilter, type UsageSums, type usageRepository } from './usage.repository';

export interface UsageQuery {
  from?: string;
  to?: string;
  groupBy?: GroupBy;
  userId?: string;
  provider?: string;
  model?: string;
  limit?: number;
}

export interface UsageMetricsView {
  messages: number;
  failures: number;
  cancelled: number;
  cacheHits: number;
  tokensIn: number;
  tokensOut: number;
  tokens: number;
  costMicros: number;
  costUsd: number;
  latencyMs: { count: number; mean: number | null; p50: number | null; p95: number | null; p99: number | null; max: number | null };
}

const MAX_RANGE_DAYS = 3660;
const DAY_MS = 86_400_000;

/** A `from`/`to` value (a date or a timestamp) as its UTC day. */
function utcDay(value: string, field: string): string {
  const time = /^\d{4}-\d{2}-\d{2}$/.test(value) ? Date.parse(`${value}T00:00:00Z`) : Date.parse(value);
  if (Number.isNaN(time)) throw problems.validation(`${field} is not a date.`, [{ path: `querystring/${field}`, message: 'must be YYYY-MM-DD or an ISO 8601 timestamp' }]);
  return new Date(time).toISOString().slice(0, 10);
}

export function metricsView(s: UsageSums): UsageMetricsView {
  return {
    messages: s.messages,
    failures: s.failures,
    cancelled: s.cancelled,
    cacheHits: s.cacheHits,
    tokensIn: s.tokensIn,
    tokensOut: s.tokensOut,
    tokens: s.tokensIn + s.tokensOut,
    costMicros: s.costMicros,
    costUsd: s.costMicros / 1_000_000,
    latencyMs: {
      count: s.latencyCount,
      mean: s.latencyCount > 0 ? Math.round(s.latencySumMs / s.latencyCount) : null,
      p50: estimatePercentile(s.latencyBuckets, s.latencyMaxMs, 50),
      p95: estimatePercentile(s.latencyBuckets, s.latencyMaxMs, 95),
      p99: estimatePercentile(s.latencyBuckets, s.latencyMaxMs, 99),
      max: s.latencyCount > 0 ? s.latencyMaxMs : null,
    },
  };
}

/**
 * Usage analytics. Writing: each `chat.message.completed` is folded into incremental aggregates
 * (see usage.consumer.ts). Reading: sums over the smallest aggregate with the needed grain, so a
 * year of data for 10,000 users reads months × users rows, not replies.
 */
export class UsageService {
  constructor(
    private readonly deps: {
      repository: ReturnType<typeof usageRepository>;
      prices: PriceTable;
    },
  ) {}

  /** The counters one finished reply adds. */
  metricsOf(data: ChatMessageCompletedData): ReplyMetrics {
    const { usage, status, cached } = data;
    // Latency is the provider's: completed replies that did not come from the cache.
    const timed = status === 'completed' && !cached;
    return {
      messages: 1,
      failures: status === 'failed' ? 1 : 0,
      cancelled: status === 'cancelled' ? 1 : 0,
      cacheHits: cached ? 1 : 0,
      tokensIn: usage.promptTokens,
      tokensOut: usage.completionTokens,
      costMicros: cached ? 0 : this.deps.prices.costMicros(data.provider, data.model, usage.promptTokens, usage.completionTokens),
      latencySumMs: timed ? data.latencyMs : 0,
      latencyCount: timed ? 1 : 0,
      latencyMaxMs: timed ? data.latencyMs : 0,
      latencyBucket: timed ? latencyBucketOf(data.latencyMs) : -1,
    };
  }

  /**
   * Tokens of a reply already counted, reported late (`chat.message.usage_recorded`: an async
   * reply cancelled while the worker ran it): its tokens and their cost on the day they were
   * reported, and no reply (messages, failures, cancellations and latency are the reply's own).
   */
  async applyLateUsage(data: ChatMessageUsageRecordedData, tx: Executor): Promise<void> {
    const at = new Date(data.recordedAt);
    const { promptTokens, completionTokens } = data.usage;
    const metrics: ReplyMetrics = {
      messages: 0,
      failures: 0,
      cancelled: 0,
      cacheHits: 0,
      tokensIn: promptTokens,
      tokensOut: completionTokens,
      costMicros: this.deps.prices.costMicros(data.provider, data.model, promptTokens, completionTokens),
      latencySumMs: 0,
      latencyCount: 0,
      latencyMaxMs: 0,
      latencyBucket: -1,
    };
    await this.deps.repository.addPending(
      { userId: data.userId, at, day: at.toISOString().slice(0, 10), provider: data.provider, model: data.model, metrics },
      tx,
    );
  }

  async applyReply(data: ChatMessageCompletedData, tx: Executor): Promise<void> {
    const at = new Date(data.completedAt);
    await this.deps.repository.addPending(
      { userId: data.userId, at, day: at.toISOString().slice(0, 10), provider: data.provider, model: data.model, metrics: this.metricsOf(data) },
      tx,
    );
  }

  async query(query: UsageQuery) {
    const groupBy = query.groupBy ?? 'day';
    const to = query.to ? utcDay(query.to, 'to') : new Date().toISOString().slice(0, 10);
    const from = query.from ? utcDay(query.from, 'from') : new Date(Date.parse(`${to}T00:00:00Z`) - 29 * DAY_MS).toISOString().slice(0, 10);
    if (from > to) throw problems.validation('from is after to.', [{ path: 'querystring/from', message: 'must not be after to' }]);
    if ((Date.parse(to) - Date.parse(from)) / DAY_MS >= MAX_RANGE_DAYS) {
      throw problems.validation(`The range is longer than ${MAX_RANGE_DAYS} days.`, [{ path: 'querystring/from', message: 'range too long' }]);
    }
    const filter: UsageFilter = {
      from,
      to,
      ...(query.userId ? { userId: query.userId } : {}),
      ...(query.provider ? { provider: query.provider } : {}),
      ...(query.model ? { model: query.model } : {}),
    };
    const limit = query.limit ?? 100;
    const repository = this.deps.repository;
    const [groups, separateTotals] = await Promise.all([
      repository.groups(groupBy, filter, limit),
      // Groups by user are a top-N; the totals come from the roll-up that has them all.
      groupBy === 'user' ? repository.totals(filter) : Promise.resolve(undefined),
    ]);
    const totals = separateTotals ?? groups.reduce((sum, g) => addSums(sum, g.sums), emptySums());
    return {
      from,
      to,
      groupBy,
      source: repository.sourceFor(groupBy, filter),
      totals: metricsView(totals),
      items: groups.map(({ sums, ...key }) => ({ ...key, ...metricsView(sums) })),
    };
  }
}
