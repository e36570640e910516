import { LATENCY_BUCKETS_MS, LATENCY_BUCKET_COUNT } from '@vivier/db-admin';

/** The histogram bucket of a latency: the first bound it does not exceed, or the overflow bucket. */
export function latencyBucketOf(ms: number): number {
  for (let i = 0; i < LATENCY_BUCKETS_MS.length; i++) if (ms <= LATENCY_BUCKETS_MS[i]!) return i;
  return LATENCY_BUCKET_COUNT - 1;
}

/**
 * Estimates the p-th percentile (0 < p ≤ 100) from bucket counts, as Prometheus'
 * `histogram_quantile` does: find the bucket holding the rank, interpolate linearly inside it.
 * The overflow bucket's upper end is the largest latency seen. Null without observations.
 */
export function estimatePercentile(buckets: readonly number[], maxMs: number, p: number): number | null {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = (p / 100) * total;
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    const count = buckets[i]!;
    if (count > 0 && seen + count >= rank) {
      const lower = i === 0 ? 0 : LATENCY_BUCKETS_MS[i - 1]!;
      const upper = i < LATENCY_BUCKETS_MS.length ? Math.min(LATENCY_BUCKETS_MS[i]!, Math.max(maxMs, lower)) : Math.max(maxMs, lower);
      return Math.round(lower + (upper - lower) * ((rank - seen) / count));
    }
    seen += count;
  }
  return Math.round(maxMs);
}
