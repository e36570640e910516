// The router against the provider simulator over real HTTP: retries, Retry-After, fallback order,
// the after-first-token rule, weighted balancing, circuit breaking, cancellation, SSRF guard.
import { startProviderSim, type ProviderSim } from '@vivier/provider-sim';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createProviderRouter,
  ProviderError,
  type AliasConfig,
  type AttemptRecord,
  type CircuitChange,
  type DeploymentConfig,
  type FallbackRecord,
  type ProviderRouter,
  type ProviderRouterOptions,
  type RoutedChatRequest,
  type RoutedStreamEvent,
  type RouteEvent,
  type RouterSettings,
} from '../src/index.js';

const COUNTING = 'one two three four five six seven eight nine ten eleven twelve';

let sim: ProviderSim;
const routers: ProviderRouter[] = [];

beforeAll(async () => {
  sim = await startProviderSim({ port: 0 });
});
afterEach(async () => {
  await Promise.all(routers.splice(0).map((r) => r.close()));
});
afterAll(async () => {
  await sim.close();
});

/** A deployment on the simulator's OpenAI endpoint serving `model`. */
function dep(id: string, model: string, extra: Partial<DeploymentConfig> = {}): DeploymentConfig {
  return {
    id,
    provider: 'openai',
    kind: 'openai',
    baseUrl: `${sim.url}/v1`,
    apiKey: 'sk-test',
    model,
    maxRetries: 0,
    ...extra,
  };
}

interface Recorded {
  attempts: AttemptRecord[];
  fallbacks: FallbackRecord[];
  circuits: CircuitChange[];
}

function build(
  deployments: DeploymentConfig[],
  aliases: AliasConfig[],
  settings: RouterSettings = {},
  options: ProviderRouterOptions = {},
): { router: ProviderRouter; seen: Recorded } {
  const seen: Recorded = { attempts: [], fallbacks: [], circuits: [] };
  const router = createProviderRouter(
    { providers: [], deployments, aliases, router: { backoffBaseMs: 10, ...settings } },
    {
      onAttempt: (a) => seen.attempts.push(a),
      onFallback: (f) => seen.fallbacks.push(f),
      onCircuitChange: (c) => seen.circuits.push(c),
      ...options,
    },
  );
  routers.push(router);
  return { router, seen };
}

interface Outcome {
  events: RoutedStreamEvent[];
  route?: RouteEvent;
  text: string;
  error?: ProviderError;
}

async function run(
  router: ProviderRouter,
  modelId: string,
  request: Partial<RoutedChatRequest> = {},
  timeoutMs?: number,
): Promise<Outcome> {
  const out: Outcome = { events: [], text: '' };
  try {
    const stream = router.stream(
      modelId,
      { messages: [{ role: 'user', content: `echo: ${COUNTING}` }], ...request },
      timeoutMs ? { timeoutMs } : {},
    );
    for await (const ev of stream) {
      out.events.push(ev);
      if (ev.type === 'route') out.route = ev;
      if (ev.type === 'delta') out.text += ev.text;
    }
  } catch (err) {
    if (!(err instanceof ProviderError)) throw err;
    out.error = err;
  }
  return out;
}

const requestsFor = (model: string) => sim.requests().filter((r) => r.model === model);

describe('routing', () => {
  it('yields a route event first, then the reply; complete() returns it with the route', async () => {
    const { router, seen } = build(
      [dep('a', 'route-a')],
      [{ alias: 'chat', deployments: ['a'], strategy: 'ordered' }],
    );
    const out = await run(router, 'chat');
    expect(out.events[0]).toEqual({ type: 'route', deploymentId: 'a', provider: 'openai', model: 'route-a' });
    expect(out.events.filter((e) => e.type === 'route')).toHaveLength(1);
    expect(out.text).toBe(COUNTING);
    expect(out.events.at(-1)).toEqual({ type: 'finish', reason: 'stop' });
    expect(seen.attempts).toMatchObject([
      { modelId: 'chat', deploymentId: 'a', attempt: 1, retry: 0, outcome: 'success' },
    ]);
    expect(seen.attempts[0]!.timeToFirstTokenMs).toBeGreaterThanOrEqual(0);

    const completion = await router.complete('openai/route-a', {
      messages: [{ role: 'user', content: 'echo: hi there' }],
    });
    expect(completion).toMatchObject({
      text: 'hi there',
      finishReason: 'stop',
      route: { deploymentId: 'a' },
    });
  });

  it('refuses an unknown model id with not_found, and routes any model of an enabled provider', async () => {
    const router = createProviderRouter({
      providers: [{ provider: 'openai', kind: 'openai', baseUrl: `${sim.url}/v1`, apiKey: 'sk-test' }],
      deployments: [],
      aliases: [],
    });
    routers.push(router);
    expect((await run(router, 'anthropic/claude-sonnet-4-5')).error).toMatchObject({
      kind: 'not_found',
      retryable: false,
    });
    expect((await run(router, 'no-such-alias')).error).toMatchObject({ kind: 'not_found' });
    const out = await run(router, 'openai/a-model-released-yesterday');
    expect(out.route).toEqual({
      type: 'route',
      deploymentId: 'openai/a-model-released-yesterday',
      provider: 'openai',
      model: 'a-model-released-yesterday',
    });
    expect(out.text).toBe(COUNTING);
  });
});

describe('retries', () => {
  it('retries a 429 no sooner than its Retry-After (1 s)', async () => {
    sim.setFaults({ status429: true, retryAfter: 1, failTimes: 1 }, 'ra-once');
    const { router, seen } = build([dep('limited', 'ra-once', { maxRetries: 2 })], []);
    const out = await run(router, 'openai/ra-once');
    expect(out.error).toBeUndefined();
    expect(out.text).toBe(COUNTING);
    const [first, second] = requestsFor('ra-once');
    expect(first?.status).toBe(429);
    expect(second?.status).toBe(200);
    expect(second!.startedAt - (first!.endedAt ?? first!.startedAt)).toBeGreaterThanOrEqual(1000);
    expect(seen.attempts.map((a) => [a.retry, a.outcome, a.error?.kind, a.error?.retryAfterMs])).toEqual([
      [0, 'error', 'rate_limited', 1000],
      [1, 'success', undefined, undefined],
    ]);
  });

  it('retries 5xx with backoff on the same deployment until it answers', async () => {
    sim.setFaults({ status5xx: 503, failTimes: 2 }, 'flaky');
    const { router, seen } = build([dep('flaky', 'flaky', { maxRetries: 2 })], []);
    const out = await run(router, 'openai/flaky');
    expect(out.text).toBe(COUNTING);
    expect(requestsFor('flaky').map((r) => r.status)).toEqual([503, 503, 200]);
    expect(seen.attempts.map((a) => [a.attempt, a.retry, a.outcome])).toEqual([
      [1, 0, 'error'],
      [2, 1, 'error'],
      [3, 2, 'success'],
    ]);
  });

  it('falls back at once when Retry-After exceeds the remaining budget, and fails fast without a fallback', async () => {
    sim.setFaults({ status429: true, retryAfter: 30 }, 'ra-long');
    const { router, seen } = build(
      [dep('limited', 'ra-long', { maxRetries: 3 }), dep('backup', 'ra-backup')],
      [
        { alias: 'chain', deployments: ['limited', 'backup'], strategy: 'ordered' },
        { alias: 'alone', deployments: ['limited'], strategy: 'ordered' },
      ],
    );
    let started = Date.now();
    const out = await run(router, 'chain', {}, 5000);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(out.route?.deploymentId).toBe('backup');
    expect(seen.fallbacks).toMatchObject([
      {
        modelId: 'chain',
        from: 'limited',
        to: 'backup',
        error: { kind: 'rate_limited', retryAfterMs: 30_000 },
      },
    ]);

    started = Date.now();
    const alone = await run(router, 'alone', {}, 5000);
    expect(Date.now() - started).toBeLessThan(1000);
    // The caller can pass the provider's Retry-After on to its client.
    expect(alone.error).toMatchObject({
      kind: 'rate_limited',
      status: 429,
      retryAfterMs: 30_000,
      beforeFirstToken: true,
    });
  });

  it('does not retry what a retry cannot fix; moves past a deployment that cannot answer, not past a refused request', async () => {
    const { router, seen } = build(
      [
        dep('bad-key', 'any', { apiKey: 'invalid-key', maxRetries: 3 }),
        dep('gone', 'missing-model', { maxRetries: 3 }),
        dep('ok', 'ok-model'),
        dep('strict', 'claude-x', { provider: 'anthropic', kind: 'anthropic', baseUrl: sim.url, apiKey: 'sk-ant-test', maxRetries: 3 }),
      ],
      [
        { alias: 'chain', deployments: ['bad-key', 'gone', 'ok'], strategy: 'ordered' },
        { alias: 'refused', deployments: ['strict', 'ok'], strategy: 'ordered' },
      ],
    );
    const out = await run(router, 'chain');
    expect(out.error).toBeUndefined();
    expect(out.route?.deploymentId).toBe('ok');
    // One try each: a refused key (401) or a model the deployment lacks (404) is not retried there.
    expect(seen.attempts.map((a) => `${a.deploymentId}:${a.outcome}`)).toEqual(['bad-key:error', 'gone:error', 'ok:success']);
    expect(seen.attempts[0]!.error).toMatchObject({ kind: 'auth', retryable: false });
    expect(seen.attempts[1]!.error).toMatchObject({ kind: 'not_found', retryable: false });
    expect(seen.fallbacks).toHaveLength(2);
    expect(router.circuits().find((c) => c.deploymentId === 'bad-key')?.consecutiveFailures).toBe(1);
    expect(router.circuits().find((c) => c.deploymentId === 'gone')?.consecutiveFailures).toBe(0);

    // A request the provider refuses (400) would be refused anywhere: no retry, no fallback.
    const refused = await run(router, 'refused', { messages: [{ role: 'system', content: 'only a system prompt' }] });
    expect(refused.error).toMatchObject({ kind: 'bad_request', retryable: false });
    expect(seen.attempts.slice(3).map((a) => a.deploymentId)).toEqual(['strict']);
    expect(router.circuits().find((c) => c.deploymentId === 'strict')?.consecutiveFailures).toBe(0);
  });
});

describe('fallback', () => {
  it('walks the chain in order on 5xx, connection errors, 429 and stalls before the first token', async () => {
    sim.setFaults({ status5xx: 503 }, 'fb-down');
    sim.setFaults({ status429: true, retryAfter: 30 }, 'fb-limited');
    sim.setFaults({ stallAfterChunks: 0 }, 'fb-stalled');
    const { router, seen } = build(
      [
        dep('down', 'fb-down'),
        // Nothing listens on port 1: connection refused.
        dep('refused', 'fb-refused', { baseUrl: 'http://127.0.0.1:1/v1' }),
        dep('limited', 'fb-limited'),
        dep('stalled', 'fb-stalled', { idleTimeoutMs: 300 }),
        dep('ok', 'fb-ok'),
      ],
      [{ alias: 'chain', deployments: ['down', 'refused', 'limited', 'stalled', 'ok'], strategy: 'ordered' }],
    );
    const out = await run(router, 'chain');
    expect(out.route?.deploymentId).toBe('ok');
    expect(out.text).toBe(COUNTING);
    expect(seen.fallbacks.map((f) => `${f.from}>${f.to}:${f.error.kind}`)).toEqual([
      'down>refused:server',
      'refused>limited:connection',
      'limited>stalled:rate_limited',
      'stalled>ok:timeout',
    ]);
    const order = sim
      .requests()
      .filter((r) => r.model?.startsWith('fb-'))
      .map((r) => r.model);
    expect(order).toEqual(['fb-down', 'fb-limited', 'fb-stalled', 'fb-ok']);
  });

  it('never switches after the first token: a cut ends with stream_cut and the partial text', async () => {
    sim.setFaults({ cutAfterChunks: 3 }, 'cut-late');
    sim.setFaults({ stallAfterChunks: 2 }, 'stall-late');
    const { router, seen } = build(
      [
        dep('cutter', 'cut-late'),
        dep('staller', 'stall-late', { idleTimeoutMs: 300 }),
        dep('backup', 'never-used'),
      ],
      [
        { alias: 'cut', deployments: ['cutter', 'backup'], strategy: 'ordered' },
        { alias: 'stall', deployments: ['staller', 'backup'], strategy: 'ordered' },
      ],
    );
    const cut = await run(router, 'cut');
    expect(cut.route?.deploymentId).toBe('cutter');
    expect(cut.text).toBe('one two three');
    expect(cut.error).toMatchObject({ kind: 'stream_cut', beforeFirstToken: false, provider: 'openai' });
    expect(cut.events.some((e) => e.type === 'finish')).toBe(false);

    const stall = await run(router, 'stall');
    expect(stall.text).toBe('one two');
    expect(stall.error).toMatchObject({ kind: 'stream_cut', beforeFirstToken: false });
    expect((stall.error?.cause as ProviderError).kind).toBe('timeout');

    expect(requestsFor('never-used')).toHaveLength(0);
    expect(seen.fallbacks).toHaveLength(0);
  });
});

describe('balancing', () => {
  it('spreads an alias by weight among healthy deployments; weight 0 is fallback only', async () => {
    const sim0 = { provider: 'sim', kind: 'sim' as const, firstTokenLatencyMs: 0, tokensPerSecond: 0 };
    const { router } = build(
      [
        { ...sim0, id: 'heavy', model: 'fast', weight: 3 },
        { ...sim0, id: 'light', model: 'fast', weight: 1 },
        { ...sim0, id: 'spare', model: 'fast', weight: 0 },
      ],
      [
        { alias: 'spread', deployments: ['spare', 'heavy', 'light'], strategy: 'weighted' },
        { alias: 'first', deployments: ['light', 'heavy'], strategy: 'ordered' },
      ],
    );
    const counts: Record<string, number> = { heavy: 0, light: 0, spare: 0 };
    const n = 400;
    await Promise.all(
      Array.from({ length: n }, async () => {
        const out = await run(router, 'spread', { messages: [{ role: 'user', content: 'echo: hi' }] });
        counts[out.route!.deploymentId]!++;
      }),
    );
    expect(counts.spare).toBe(0);
    expect(counts.heavy! / n).toBeGreaterThan(0.65);
    expect(counts.heavy! / n).toBeLessThan(0.85);
    expect(counts.heavy! + counts.light!).toBe(n);
    for (let i = 0; i < 5; i++)
      expect(
        (await run(router, 'first', { messages: [{ role: 'user', content: 'echo: hi' }] })).route
          ?.deploymentId,
      ).toBe('light');
  });
});

describe('circuit breaker', () => {
  it('opens after consecutive failures, half-opens after the cool-down, closes on success', async () => {
    sim.setFaults({ status5xx: 500 }, 'cb-model');
    const { router, seen } = build(
      [dep('cb', 'cb-model'), dep('backup', 'cb-backup')],
      [
        { alias: 'chain', deployments: ['cb', 'backup'], strategy: 'ordered' },
        { alias: 'alone', deployments: ['cb'], strategy: 'ordered' },
      ],
      // A cool-down long enough for the checks of the open state on a loaded machine.
      { failureThreshold: 2, cooldownMs: 1500 },
    );
    const state = () => router.circuits().find((c) => c.deploymentId === 'cb')?.state;

    expect((await run(router, 'chain')).route?.deploymentId).toBe('backup');
    expect(state()).toBe('closed');
    expect((await run(router, 'chain')).route?.deploymentId).toBe('backup');
    expect(state()).toBe('open');

    // Open: not even tried.
    expect((await run(router, 'chain')).route?.deploymentId).toBe('backup');
    expect(requestsFor('cb-model')).toHaveLength(2);
    const alone = await run(router, 'alone');
    expect(alone.error).toMatchObject({ kind: 'server', status: 503, retryable: true });
    expect(alone.error?.message).toMatch(/circuit open/);
    expect(requestsFor('cb-model')).toHaveLength(2);

    // Half-open trial fails: open again.
    await new Promise((r) => setTimeout(r, 1600));
    expect((await run(router, 'chain')).route?.deploymentId).toBe('backup');
    expect(requestsFor('cb-model')).toHaveLength(3);
    expect(state()).toBe('open');

    // Half-open trial succeeds: closed.
    sim.setFaults({}, 'cb-model');
    await new Promise((r) => setTimeout(r, 1600));
    expect((await run(router, 'chain')).route?.deploymentId).toBe('cb');
    expect(state()).toBe('closed');
    expect(seen.circuits.filter((c) => c.deploymentId === 'cb').map((c) => `${c.from}>${c.to}`)).toEqual([
      'closed>open',
      'open>half_open',
      'half_open>open',
      'open>half_open',
      'half_open>closed',
    ]);
  });
});

describe('circuit breaker, replies cut after the first token', () => {
  it('opens for a deployment that starts every reply and cuts it: a first token resets nothing', async () => {
    sim.setFaults({ cutAfterChunks: 2 }, 'cb-cutter');
    const { router } = build([dep('cutter-cb', 'cb-cutter'), dep('healthy', 'cb-healthy')], [{ alias: 'chain', deployments: ['cutter-cb', 'healthy'], strategy: 'ordered' }], {
      failureThreshold: 3,
      cooldownMs: 60_000,
    });
    for (let i = 0; i < 3; i++) {
      const cut = await run(router, 'chain');
      expect(cut.route?.deploymentId).toBe('cutter-cb');
      expect(cut.error).toMatchObject({ kind: 'stream_cut', beforeFirstToken: false });
    }
    expect(router.circuits().find((c) => c.deploymentId === 'cutter-cb')?.state).toBe('open');
    // Traffic moves to the deployment that finishes its replies.
    const next = await run(router, 'chain');
    expect(next.route?.deploymentId).toBe('healthy');
    expect(next.error).toBeUndefined();
  });
});

describe('cancellation', () => {
  it('aborting the signal mid-stream ends with cancelled and closes the upstream connection within a second', async () => {
    sim.setFaults({ tokensPerSecond: 20, replyTokens: 200 }, 'router-abort');
    const { router, seen } = build([dep('slow', 'router-abort')], []);
    const controller = new AbortController();
    let abortedAt = 0;
    let error: unknown;
    try {
      for await (const ev of router.stream('openai/router-abort', {
        messages: [{ role: 'user', content: 'hi' }],
        signal: controller.signal,
      }))
        if (ev.type === 'delta' && abortedAt === 0) {
          abortedAt = Date.now();
          controller.abort();
        }
    } catch (err) {
      error = err;
    }
    expect(error).toMatchObject({ kind: 'cancelled', beforeFirstToken: false });
    const deadline = Date.now() + 1000;
    while (Date.now() < deadline && !sim.stats().aborts.some((a) => a.model === 'router-abort'))
      await new Promise((r) => setTimeout(r, 20));
    const record = sim.stats().aborts.find((a) => a.model === 'router-abort');
    expect(record).toBeDefined();
    expect(record!.abortedAt - abortedAt).toBeLessThan(1000);
    expect(seen.attempts.at(-1)).toMatchObject({ outcome: 'cancelled' });
    expect(router.circuits().find((c) => c.deploymentId === 'slow')).toMatchObject({
      state: 'closed',
      consecutiveFailures: 0,
    });
  });

  it('aborting during a retry wait stops at once', async () => {
    sim.setFaults({ status429: true, retryAfter: 5 }, 'abort-wait');
    const { router } = build([dep('w', 'abort-wait', { maxRetries: 2 })], []);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const started = Date.now();
    const out = await run(router, 'openai/abort-wait', { signal: controller.signal });
    expect(out.error).toMatchObject({ kind: 'cancelled' });
    expect(Date.now() - started).toBeLessThan(1000);
  });
});

describe('untrusted base URLs', () => {
  it('refuses a deployment whose admin-set URL points at a private address, unless allowlisted', async () => {
    const port = new URL(sim.url).port;
    const guarded = (host: string, allowedHosts: string[] = []) => {
      const router = createProviderRouter({
        providers: [],
        deployments: [
          dep('admin-set', 'ssrf-model', { baseUrl: `http://${host}:${port}/v1`, untrusted: true }),
        ],
        aliases: [],
        allowedHosts,
      });
      routers.push(router);
      return router;
    };
    const byAddress = await run(guarded('127.0.0.1'), 'openai/ssrf-model');
    expect(byAddress.error).toMatchObject({ kind: 'connection', retryable: false });
    expect(byAddress.error?.message).toMatch(/refused: 127\.0\.0\.1 is a loopback address/);
    const byName = await run(guarded('localhost'), 'openai/ssrf-model');
    expect(byName.error?.message).toMatch(/refused: localhost is a loopback name/);
    expect(requestsFor('ssrf-model')).toHaveLength(0);

    // Allowlisted: the connection goes through the guarded DNS lookup and reaches the simulator.
    expect((await run(guarded('localhost', ['localhost']), 'openai/ssrf-model')).text).toBe(COUNTING);
    expect(requestsFor('ssrf-model')).toHaveLength(1);
  });
});

describe('usage a server reports', () => {
  it('passes on whole, non-negative counts only: a negative or fractional count is no count', async () => {
    const { createServer } = await import('node:http');
    const usages = [
      { prompt_tokens: 7, completion_tokens: 2 },
      { prompt_tokens: -3, completion_tokens: 2 },
      { prompt_tokens: 7, completion_tokens: 2.5 },
    ];
    const server = createServer((req, res) => {
      const usage = usages[Number(/\/u(\d)\//.exec(req.url ?? '')?.[1] ?? 0)];
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(
        `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: 'two words' }, finish_reason: 'stop' }] })}\n\n` +
          `data: ${JSON.stringify({ choices: [], usage })}\n\ndata: [DONE]\n\n`,
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    try {
      const usageOf = async (n: number) => {
        const { router } = build([dep(`u${n}`, 'm', { baseUrl: `${base}/u${n}/v1` })], [{ alias: `u${n}`, deployments: [`u${n}`], strategy: 'ordered' }]);
        const out = await run(router, `u${n}`);
        expect(out.error).toBeUndefined();
        expect(out.text).toBe('two words');
        return out.events.filter((e) => e.type === 'usage');
      };
      expect(await usageOf(0)).toEqual([{ type: 'usage', promptTokens: 7, completionTokens: 2 }]);
      expect(await usageOf(1)).toEqual([]);
      expect(await usageOf(2)).toEqual([]);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
