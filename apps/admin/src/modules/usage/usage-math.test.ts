import { describe, expect, it } from 'vitest';
import { LATENCY_BUCKETS_MS, LATENCY_BUCKET_COUNT } from '@vivier/db-admin';
import { estimatePercentile, latencyBucketOf } from './latency-histogram';
import { DEFAULT_PRICES, PriceTable } from './price-table';
import { splitByMonths } from './usage.repository';

describe('latency histogram', () => {
  it('puts a latency in the first bucket whose bound it does not exceed', () => {
    expect(latencyBucketOf(0)).toBe(0);
    expect(latencyBucketOf(100)).toBe(0);
    expect(latencyBucketOf(101)).toBe(1);
    expect(latencyBucketOf(300_000)).toBe(LATENCY_BUCKETS_MS.length - 1);
    expect(latencyBucketOf(300_001)).toBe(LATENCY_BUCKET_COUNT - 1);
  });

  it('estimates percentiles within the bucket holding the rank', () => {
    const buckets = new Array<number>(LATENCY_BUCKET_COUNT).fill(0);
    expect(estimatePercentile(buckets, 0, 50)).toBeNull();
    // 1000 latencies spread 1..1000 ms: the estimates land near the true values.
    for (let ms = 1; ms <= 1000; ms++) buckets[latencyBucketOf(ms)]! += 1;
    for (const p of [50, 95, 99]) expect(Math.abs(estimatePercentile(buckets, 1000, p)! - p * 10)).toBeLessThanOrEqual(30);
    // The overflow bucket ends at the largest latency seen.
    const slow = new Array<number>(LATENCY_BUCKET_COUNT).fill(0);
    slow[LATENCY_BUCKET_COUNT - 1] = 10;
    expect(estimatePercentile(slow, 400_000, 100)).toBe(400_000);
    expect(estimatePercentile(slow, 400_000, 50)).toBe(350_000);
  });
});

describe('price table', () => {
  const prices = new PriceTable({ ...DEFAULT_PRICES, 'acme/*': { input: 1, output: 1 } });
  it('prices by exact id, dated version, provider wildcard; unknown costs 0', () => {
    expect(prices.priceOf('openai', 'openai/gpt-4o-mini')).toEqual({ input: 0.15, output: 0.6 });
    expect(prices.priceOf('openai', 'openai/gpt-4o-mini-2024-07-18')).toEqual({ input: 0.15, output: 0.6 });
    expect(prices.priceOf('openai', 'openai/gpt-4o-2024-08-06')).toEqual({ input: 2.5, output: 10 });
    expect(prices.priceOf('openai', 'gpt-4o')).toEqual({ input: 2.5, output: 10 });
    expect(prices.priceOf('ollama', 'ollama/llama3.2')).toEqual({ input: 0, output: 0 });
    expect(prices.priceOf('acme', 'acme/anything')).toEqual({ input: 1, output: 1 });
    expect(prices.priceOf('nobody', 'nobody/model')).toBeUndefined();
    expect(prices.costMicros('nobody', 'nobody/model', 1000, 1000)).toBe(0);
  });

  it('costs in USD micro-units: USD per million tokens is micro-USD per token', () => {
    // 1000 × 0.15 + 500 × 0.6 = 450 micro-USD.
    expect(prices.costMicros('openai', 'openai/gpt-4o-mini', 1000, 500)).toBe(450);
    expect(prices.costMicros('anthropic', 'anthropic/claude-sonnet-4-5', 1_000_000, 1_000_000)).toBe(18_000_000);
  });
});

describe('splitting a range into whole months and days', () => {
  it('uses whole months where it can', () => {
    expect(splitByMonths('2025-01-01', '2025-12-31')).toEqual({ months: ['2025-01-01', '2025-12-01'], days: [] });
    expect(splitByMonths('2025-01-15', '2025-03-10')).toEqual({ months: ['2025-02-01', '2025-02-01'], days: [['2025-01-15', '2025-01-31'], ['2025-03-01', '2025-03-10']] });
    expect(splitByMonths('2025-02-03', '2025-02-20')).toEqual({ days: [['2025-02-03', '2025-02-20']] });
    expect(splitByMonths('2024-02-01', '2024-02-29')).toEqual({ months: ['2024-02-01', '2024-02-01'], days: [] });
    expect(splitByMonths('2024-12-20', '2025-01-31')).toEqual({ months: ['2025-01-01', '2025-01-01'], days: [['2024-12-20', '2024-12-31']] });
    expect(splitByMonths('2025-01-31', '2025-02-01')).toEqual({ days: [['2025-01-31', '2025-02-01']] });
  });
});
