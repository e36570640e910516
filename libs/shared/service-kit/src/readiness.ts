import fp from 'fastify-plugin';

export interface ReadinessCheck {
  name: string;
  /**
   * A critical dependency makes the service unready (503): traffic should go elsewhere.
   * A non-critical one (Kafka behind an outbox, Redis behind a documented fallback) only marks
   * the service degraded: it keeps receiving traffic and says what is missing.
   */
  critical: boolean;
  check: () => Promise<void>;
}

declare module 'fastify' {
  interface FastifyInstance {
    readiness: { add(check: ReadinessCheck): void; run(): Promise<ReadinessReport> };
  }
}

export interface ReadinessReport {
  status: 'ready' | 'degraded' | 'unavailable';
  checks: Record<string, { status: 'up' | 'down'; critical: boolean; error?: string; latencyMs: number }>;
}

const CHECK_TIMEOUT_MS = 2000;

async function runCheck(check: ReadinessCheck): Promise<ReadinessReport['checks'][string]> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      check.check(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
      }),
    ]);
    return { status: 'up', critical: check.critical, latencyMs: Math.round(performance.now() - started) };
  } catch (error) {
    return {
      status: 'down',
      critical: check.critical,
      error: error instanceof Error ? error.message : String(error),
      latencyMs: Math.round(performance.now() - started),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** `GET /health` (the process is alive) and `GET /ready` (its dependencies answer). */
export const readinessPlugin = fp(
  async (app) => {
    const checks: ReadinessCheck[] = [];
    let closing = false;
    app.addHook('preClose', async () => {
      closing = true;
    });
    const run = async (): Promise<ReadinessReport> => {
      const results = await Promise.all(checks.map(async (c) => [c.name, await runCheck(c)] as const));
      const report: ReadinessReport = { status: 'ready', checks: Object.fromEntries(results) };
      for (const [, r] of results) {
        if (r.status === 'down') report.status = r.critical ? 'unavailable' : report.status === 'ready' ? 'degraded' : report.status;
      }
      return report;
    };
    app.decorate('readiness', { add: (check: ReadinessCheck) => void checks.push(check), run });
    app.get('/health', { logLevel: 'warn', schema: { hide: true } }, async () => ({ status: 'ok' }));
    app.get('/ready', { logLevel: 'warn', schema: { hide: true } }, async (_request, reply) => {
      if (closing || app.draining?.active) return reply.code(503).send({ status: 'unavailable', checks: {}, closing: true });
      const report = await run();
      return reply.code(report.status === 'unavailable' ? 503 : 200).send(report);
    });
  },
  { name: 'readiness' },
);
