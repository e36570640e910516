/** A small closed-loop HTTP load generator: N connections, each sending its next request as soon as the last answer is read. */
import { Pool } from 'undici';
import { percentile } from './stats';

export interface LoadOptions {
  origin: string;
  path: string;
  headers?: Record<string, string>;
  /** POST with this body (JSON) instead of GET. */
  body?: string;
  connections: number;
  durationMs: number;
}

export interface LoadResult {
  requests: number;
  errors: number;
  /** Completed requests per second. */
  rps: number;
  p50Ms: number;
  p99Ms: number;
}

export async function closedLoop(options: LoadOptions): Promise<LoadResult> {
  const pool = new Pool(options.origin, {
    connections: options.connections,
    pipelining: 1,
    keepAliveTimeout: 30_000,
  });
  const latencies: number[] = [];
  let errors = 0;
  const started = performance.now();
  const deadline = started + options.durationMs;
  const worker = async () => {
    while (performance.now() < deadline) {
      const t0 = performance.now();
      try {
        const res = await pool.request(
          options.body === undefined
            ? { method: 'GET', path: options.path, headers: options.headers }
            : { method: 'POST', path: options.path, headers: { 'content-type': 'application/json', ...options.headers }, body: options.body },
        );
        await res.body.dump();
        if (res.statusCode !== 200) errors += 1;
        else latencies.push(performance.now() - t0);
      } catch {
        errors += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: options.connections }, worker));
  const elapsed = (performance.now() - started) / 1000;
  await pool.close();
  return {
    requests: latencies.length,
    errors,
    rps: latencies.length / elapsed,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}
