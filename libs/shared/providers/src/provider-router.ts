// Model ids → deployments → attempts. Weighted balancing among healthy deployments, retries with
// backoff that honour Retry-After, fallback down an alias's chain before the first token, one
// circuit breaker per deployment, and hooks for metrics and logs.
//
// The rule that shapes everything here: once text has reached the caller, the request is never
// replayed or moved to another provider (the two halves would not belong to one reply). A
// failure after the first token ends the stream with ProviderError `stream_cut`
// (`beforeFirstToken: false`) and the caller stores the partial reply as failed.
import { context as otelContext, SpanKind, SpanStatusCode, trace, type Context, type Span } from '@opentelemetry/api';
import { CircuitBreaker, type CircuitChange, type CircuitPass, type CircuitSnapshot } from './circuit-breaker.js';
import { collectCompletion } from './completion.js';
import { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_TIMEOUT_MS } from './http-transport.js';
import { KNOWN_MODELS, contextWindowFor } from './model-catalog.js';
import { createChatProvider, endpointKey, type EndpointExtras } from './provider-endpoint.js';
import {
  loadProvidersConfig,
  type DeploymentConfig,
  type EndpointConfig,
  type ProviderEnv,
  type ProvidersConfig,
  type RouterSettings,
} from './providers-config.js';
import type { ProviderKind } from './providers-file.schema.js';
import {
  ProviderError,
  type ChatProvider,
  type ChatRequest,
  type Completion,
  type StreamEvent,
} from './types.js';

export interface RouteEvent {
  type: 'route';
  deploymentId: string;
  provider: string;
  /** The provider's own model name; the Vivier model id is `${provider}/${model}`. */
  model: string;
}

/** What `router.stream()` yields: one `route` event first, then the provider's events. */
export type RoutedStreamEvent = StreamEvent | RouteEvent;

/** `ChatRequest` without `model`: the router fills in each deployment's own model name. */
export type RoutedChatRequest = Omit<ChatRequest, 'model'>;

export interface RouteOptions {
  /** The whole request's budget, retries and fallbacks included (default: router setting). */
  timeoutMs?: number;
}

export interface AttemptRecord {
  modelId: string;
  deploymentId: string;
  provider: string;
  model: string;
  /** 1-based count of attempts within this request. */
  attempt: number;
  /** 0 for the first try on this deployment, then 1, 2, … */
  retry: number;
  outcome: 'success' | 'error' | 'cancelled';
  error?: ProviderError;
  startedAt: number;
  durationMs: number;
  /** Absent when nothing arrived. */
  timeToFirstTokenMs?: number;
  /** Tokens in and out, when the provider (or the token counter) reported them. */
  usage?: { promptTokens: number; completionTokens: number };
}

export interface FallbackRecord {
  modelId: string;
  from: string;
  to: string;
  error: ProviderError;
}

export interface RouterHooks {
  /** Every attempt, when it ends (a successful stream ends at its last event). */
  onAttempt?(record: AttemptRecord): void;
  /** The router moves to the next deployment of the chain. */
  onFallback?(record: FallbackRecord): void;
  onCircuitChange?(change: CircuitChange): void;
}

export interface ProviderRouterOptions extends RouterHooks {
  /** Overrides the providers file's `router` section. */
  settings?: RouterSettings;
  /** For tests: the source of randomness for balancing and jitter. */
  random?: () => number;
}

export interface ModelInfo {
  /** What a client sends: `<provider>/<model>` or an alias. */
  id: string;
  type: 'model' | 'alias';
  /** For an alias: its first deployment's provider and model. */
  provider: string;
  model: string;
  /** Tokens; for an alias, the smallest of its deployments' windows. */
  contextWindow: number;
  /** Alias only: the deployment ids of its chain. */
  deployments?: string[];
}

export interface ResolvedModel {
  id: string;
  type: 'model' | 'alias';
  strategy: 'weighted' | 'ordered';
  deployments: Array<{ id: string; provider: string; model: string }>;
  contextWindow: number;
}

interface Runtime {
  id: string;
  provider: string;
  kind: ProviderKind;
  model: string;
  weight: number;
  timeoutMs: number;
  idleTimeoutMs: number;
  maxRetries: number;
  contextWindow: number;
  endpoint: EndpointConfig;
  numCtx?: number;
  breaker: CircuitBreaker;
}

interface Route {
  strategy: 'weighted' | 'ordered';
  deployments: Runtime[];
  /** Other providers' deployments to try after these, in order (the provider's `fallbacks`). */
  fallbacks?: Runtime[];
}

const DEFAULTS = {
  requestTimeoutMs: DEFAULT_TIMEOUT_MS,
  maxRetryDelayMs: 30_000,
  backoffBaseMs: 250,
  backoffMaxMs: 8_000,
  failureThreshold: 5,
  cooldownMs: 30_000,
  maxRetries: 2,
  timeoutMs: DEFAULT_TIMEOUT_MS,
  idleTimeoutMs: DEFAULT_IDLE_TIMEOUT_MS,
  discoveryIntervalMs: 300_000,
};

/** Kinds whose models are not known in advance: their servers are asked (discovery). */
const DISCOVERED_KINDS: ReadonlySet<ProviderKind> = new Set(['ollama', 'openai_compatible']);
const DISCOVERY_TIMEOUT_MS = 5000;
/** A server listing more than this is cut: a list is for people to pick from. */
const MAX_DISCOVERED_PER_PROVIDER = 500;

/** What one discovery run found for one provider. */
export interface DiscoveryResult {
  provider: string;
  /** The models listed, when the server answered. */
  models?: string[];
  error?: Error;
}

/** Direct model ids create deployments on demand; a bound keeps arbitrary names from piling up. */
const MAX_IMPLICIT_DEPLOYMENTS = 1000;

/**
 * Failures of the deployment, not of the request: they count against its circuit and, before the
 * first token, the next deployment of the chain is asked. A 400 says something about the request
 * (every deployment would refuse it); a cancel says nothing. A refused key (401/403), a model or
 * endpoint the deployment does not have (404) or an address refused as unsafe are the deployment's
 * own: retrying there is no use, but another deployment may answer.
 */
function deploymentFault(err: ProviderError): boolean {
  return err.kind !== 'bad_request' && err.kind !== 'cancelled';
}

/**
 * Of those, what says the deployment is unwell: not a 404, which a mistyped model id gets too (its
 * circuit would answer "unavailable" for a model that does not exist).
 */
function countsAgainstCircuit(err: ProviderError): boolean {
  return deploymentFault(err) && err.kind !== 'not_found';
}

function asProviderError(err: unknown, provider: string, beforeFirstToken: boolean): ProviderError {
  if (err instanceof ProviderError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'ERR_UNSAFE_PROVIDER_URL')
    return new ProviderError({
      kind: 'connection',
      provider,
      message: (err as Error).message,
      retryable: false,
      beforeFirstToken,
      cause: err,
    });
  return new ProviderError({
    kind: 'server',
    provider,
    message: `${provider} adapter failed: ${err instanceof Error ? err.message : String(err)}`,
    retryable: false,
    beforeFirstToken,
    cause: err,
  });
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve(false);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export class ProviderRouter {
  private readonly settings: Required<RouterSettings>;
  private readonly hooks: RouterHooks;
  private readonly random: () => number;
  // What the configuration says; reconfigure() replaces all of it at once.
  private allowedHosts: readonly string[] = [];
  private endpoints = new Map<string, EndpointConfig>();
  private deployments = new Map<string, Runtime>();
  private aliases = new Map<string, { strategy: 'weighted' | 'ordered'; ids: string[] }>();
  /** `${provider}/${model}` → the configured deployments serving exactly that. */
  private direct = new Map<string, Runtime[]>();
  /** Provider → the model names of its configured deployments, in order (for fallbacks). */
  private listed = new Map<string, string[]>();
  private implicit = new Map<string, Runtime>();
  private readonly adapters = new Map<string, ChatProvider | ProviderError>();
  /** Provider → the models its server listed, and the endpoint that listed them. */
  private readonly discovered = new Map<string, { endpointKey: string; models: string[] }>();
  private discovery: { timer: NodeJS.Timeout; onResult: (results: DiscoveryResult[]) => void } | undefined;

  constructor(config: ProvidersConfig, options: ProviderRouterOptions = {}) {
    this.settings = { ...DEFAULTS, ...config.router, ...options.settings } as Required<RouterSettings>;
    this.hooks = { ...options };
    this.random = options.random ?? Math.random;
    this.apply(config);
  }

  /**
   * Serves `config` from now on (the router settings stay those it was built with). Requests
   * already running finish on what they started with. A deployment whose endpoint and model did
   * not change keeps its circuit; connections no deployment uses any more are closed once their
   * requests have ended. Throws, changing nothing, when the configuration is inconsistent.
   */
  async reconfigure(config: ProvidersConfig): Promise<void> {
    this.apply(config);
    // A provider added or moved is listed now rather than at the next interval.
    if (this.discovery) void this.discover().then(this.discovery.onResult).catch(() => undefined);
    const live = new Set<string>();
    for (const d of [...this.deployments.values(), ...this.implicit.values()]) live.add(this.adapterKey(d));
    for (const endpoint of this.endpoints.values()) live.add(endpointKey(endpoint, { allowedHosts: this.allowedHosts }));
    const stale: ChatProvider[] = [];
    for (const [key, adapter] of this.adapters) {
      if (live.has(key)) continue;
      this.adapters.delete(key);
      if (!(adapter instanceof ProviderError)) stale.push(adapter);
    }
    // Not awaited: a pool closes once its running requests (streams of minutes) have ended, and the
    // new configuration must not wait for them.
    void Promise.allSettled(stale.map((a) => a.close()));
  }

  private apply(config: ProvidersConfig): void {
    const previous = new Map([...this.implicit, ...this.deployments]);
    const endpoints = new Map<string, EndpointConfig>();
    const deployments = new Map<string, Runtime>();
    const direct = new Map<string, Runtime[]>();
    const listed = new Map<string, string[]>();
    const aliases = new Map<string, { strategy: 'weighted' | 'ordered'; ids: string[] }>();
    for (const endpoint of config.providers) endpoints.set(endpoint.provider, endpoint);
    for (const dep of config.deployments) {
      if (deployments.has(dep.id)) throw new Error(`duplicate deployment id "${dep.id}"`);
      const runtime = this.runtimeFor(dep.id, dep, dep.model, dep, previous.get(dep.id));
      deployments.set(dep.id, runtime);
      const key = `${dep.provider}/${dep.model}`;
      direct.set(key, [...(direct.get(key) ?? []), runtime]);
      const models = listed.get(dep.provider) ?? [];
      if (!models.includes(dep.model)) listed.set(dep.provider, [...models, dep.model]);
    }
    for (const alias of config.aliases) {
      for (const id of alias.deployments)
        if (!deployments.has(id)) throw new Error(`alias "${alias.alias}" names unknown deployment "${id}"`);
      aliases.set(alias.alias, { strategy: alias.strategy ?? 'ordered', ids: [...alias.deployments] });
    }
    // Model ids served on demand keep their circuit while their provider's endpoint is the same.
    const implicit = new Map<string, Runtime>();
    for (const [id, runtime] of this.implicit) {
      const endpoint = endpoints.get(runtime.provider);
      if (endpoint) implicit.set(id, this.runtimeFor(id, endpoint, runtime.model, undefined, runtime));
    }
    this.allowedHosts = config.allowedHosts ?? [];
    this.endpoints = endpoints;
    this.deployments = deployments;
    this.direct = direct;
    this.listed = listed;
    this.aliases = aliases;
    this.implicit = implicit;
  }

  private runtimeFor(
    id: string,
    endpoint: EndpointConfig,
    model: string,
    dep?: DeploymentConfig,
    previous?: Runtime,
  ): Runtime {
    const contextWindow = dep?.contextWindow ?? contextWindowFor(endpoint.kind, model);
    const sameEndpoint =
      previous !== undefined && previous.model === model && endpointKey(previous.endpoint) === endpointKey(endpoint);
    return {
      id,
      provider: endpoint.provider,
      kind: endpoint.kind,
      model,
      weight: dep?.weight ?? 1,
      timeoutMs: endpoint.timeoutMs ?? this.settings.timeoutMs,
      idleTimeoutMs: endpoint.idleTimeoutMs ?? this.settings.idleTimeoutMs,
      maxRetries: endpoint.maxRetries ?? this.settings.maxRetries,
      contextWindow,
      endpoint,
      ...(endpoint.kind === 'ollama' && dep?.contextWindow !== undefined
        ? { numCtx: dep.contextWindow }
        : {}),
      breaker: sameEndpoint
        ? previous.breaker
        : new CircuitBreaker(id, this.settings.failureThreshold, this.settings.cooldownMs, (change) =>
            this.call('onCircuitChange', change),
          ),
    };
  }

  private call<K extends keyof RouterHooks>(hook: K, arg: Parameters<NonNullable<RouterHooks[K]>>[0]): void {
    const fn = this.hooks[hook] as ((a: typeof arg) => void) | undefined;
    if (!fn) return;
    try {
      fn(arg);
    } catch {
      // Metrics and logging must never break a reply.
    }
  }

  /** Provider ids that accept `<provider>/<any model>`. */
  enabledProviders(): string[] {
    return [...this.endpoints.keys()];
  }

  private route(modelId: string): Route | undefined {
    const alias = this.aliases.get(modelId);
    if (alias)
      return {
        strategy: alias.strategy,
        deployments: alias.ids.map((id) => this.deployments.get(id) as Runtime),
      };
    const deployments = this.directRoute(modelId);
    if (!deployments) return undefined;
    const fallbacks = this.fallbacksOf(deployments[0] as Runtime);
    return { strategy: 'weighted', deployments, ...(fallbacks.length > 0 ? { fallbacks } : {}) };
  }

  /** The deployments of a `<provider>/<model>` id: configured ones, or one made on demand. */
  private directRoute(modelId: string): Runtime[] | undefined {
    const configured = this.direct.get(modelId);
    if (configured) return configured;
    const slash = modelId.indexOf('/');
    if (slash <= 0 || slash === modelId.length - 1) return undefined;
    const endpoint = this.endpoints.get(modelId.slice(0, slash));
    if (!endpoint) return undefined;
    let runtime = this.implicit.get(modelId);
    if (!runtime) {
      runtime = this.runtimeFor(modelId, endpoint, modelId.slice(slash + 1));
      if (this.implicit.size >= MAX_IMPLICIT_DEPLOYMENTS) {
        const oldest = this.implicit.keys().next().value;
        if (oldest !== undefined) this.implicit.delete(oldest);
      }
      this.implicit.set(modelId, runtime);
    }
    return [runtime];
  }

  /**
   * The deployments of the provider's fallbacks that are enabled: the same model name, or the
   * fallback's first listed model when it lists models and not this one.
   */
  private fallbacksOf(primary: Runtime): Runtime[] {
    const names = this.endpoints.get(primary.provider)?.fallbacks;
    if (!names || names.length === 0) return [];
    const out: Runtime[] = [];
    for (const name of names) {
      if (name === primary.provider || !this.endpoints.has(name)) continue;
      const models = this.listed.get(name) ?? [];
      const model = models.length === 0 || models.includes(primary.model) ? primary.model : (models[0] as string);
      for (const d of this.directRoute(`${name}/${model}`) ?? []) if (!out.includes(d)) out.push(d);
    }
    return out;
  }

  /** What a model id routes to, or undefined when no enabled provider or alias serves it. */
  resolve(modelId: string): ResolvedModel | undefined {
    const route = this.route(modelId);
    if (!route) return undefined;
    const all = [...route.deployments, ...(route.fallbacks ?? [])];
    return {
      id: modelId,
      type: this.aliases.has(modelId) ? 'alias' : 'model',
      strategy: route.strategy,
      deployments: all.map((d) => ({ id: d.id, provider: d.provider, model: d.model })),
      // Whichever answers, the prompt must fit: the smallest window of the chain.
      contextWindow: Math.min(...all.map((d) => d.contextWindow)),
    };
  }

  /** For `/api/v1/models`: aliases, the known models of enabled providers, configured deployments. */
  listModels(): ModelInfo[] {
    const out: ModelInfo[] = [];
    const seen = new Set<string>();
    const add = (info: ModelInfo) => {
      if (seen.has(info.id)) return;
      seen.add(info.id);
      out.push(info);
    };
    for (const [alias, { ids }] of this.aliases) {
      const deps = ids.map((id) => this.deployments.get(id) as Runtime);
      const first = deps[0] as Runtime;
      add({
        id: alias,
        type: 'alias',
        provider: first.provider,
        model: first.model,
        contextWindow: Math.min(...deps.map((d) => d.contextWindow)),
        deployments: [...ids],
      });
    }
    for (const dep of this.deployments.values())
      add({
        id: `${dep.provider}/${dep.model}`,
        type: 'model',
        provider: dep.provider,
        model: dep.model,
        contextWindow: dep.contextWindow,
      });
    for (const [provider, { endpointKey: key, models }] of this.discovered) {
      const endpoint = this.endpoints.get(provider);
      if (!endpoint || endpointKey(endpoint) !== key) continue;
      for (const model of models)
        add({ id: `${provider}/${model}`, type: 'model', provider, model, contextWindow: contextWindowFor(endpoint.kind, model) });
    }
    for (const endpoint of this.endpoints.values()) {
      // Only a vendor's own endpoint serves its catalogue; a compatible server's models are its own.
      if (endpoint.provider !== endpoint.kind) continue;
      for (const known of KNOWN_MODELS[endpoint.kind] ?? [])
        if (known.listed)
          add({
            id: `${endpoint.provider}/${known.model}`,
            type: 'model',
            provider: endpoint.provider,
            model: known.model,
            contextWindow: contextWindowFor(endpoint.kind, known.model),
          });
    }
    return out;
  }

  /**
   * Asks every enabled Ollama and OpenAI-compatible server for its models (in parallel, 5 s each);
   * `listModels()` then offers them. A server that does not answer keeps what it listed last.
   */
  async discover(): Promise<DiscoveryResult[]> {
    const endpoints = [...this.endpoints.values()].filter((e) => DISCOVERED_KINDS.has(e.kind));
    return Promise.all(
      endpoints.map(async (endpoint): Promise<DiscoveryResult> => {
        const key = endpointKey(endpoint);
        try {
          const adapter = this.adapterForEndpoint(endpoint);
          const models = ((await adapter.listModels?.(DISCOVERY_TIMEOUT_MS)) ?? []).slice(0, MAX_DISCOVERED_PER_PROVIDER);
          // Still the same endpoint (no reconfigure meanwhile moved it): keep what it listed.
          if (this.endpoints.get(endpoint.provider) === endpoint) this.discovered.set(endpoint.provider, { endpointKey: key, models });
          return { provider: endpoint.provider, models };
        } catch (error) {
          return { provider: endpoint.provider, error: error instanceof Error ? error : new Error(String(error)) };
        }
      }),
    );
  }

  /**
   * Runs discover() now and every `discoveryIntervalMs` (router settings; 0: never) until close(),
   * handing each run's results to `onResult` (to log the servers that did not answer). Resolves
   * when the first run has ended (at most the 5 s of a server that does not answer).
   */
  startDiscovery(onResult: (results: DiscoveryResult[]) => void = () => undefined): Promise<void> {
    if (this.discovery || this.settings.discoveryIntervalMs <= 0) return Promise.resolve();
    const run = () => this.discover().then(onResult).catch(() => undefined);
    const timer = setInterval(() => void run(), this.settings.discoveryIntervalMs);
    timer.unref();
    this.discovery = { timer, onResult };
    return run();
  }

  /** Every configured deployment's circuit, for metrics. */
  circuits(): CircuitSnapshot[] {
    return [...this.deployments.values(), ...this.implicit.values()].map((d) => d.breaker.snapshot());
  }

  private extrasFor(d: Runtime): EndpointExtras {
    return { allowedHosts: this.allowedHosts, ...(d.numCtx !== undefined ? { numCtx: d.numCtx } : {}) };
  }

  private adapterKey(d: Runtime): string {
    return endpointKey(d.endpoint, this.extrasFor(d));
  }

  private adapterFor(d: Runtime): ChatProvider {
    return this.adapterForEndpoint(d.endpoint, this.extrasFor(d));
  }

  private adapterForEndpoint(endpoint: EndpointConfig, extras: EndpointExtras = { allowedHosts: this.allowedHosts }): ChatProvider {
    const key = endpointKey(endpoint, extras);
    let adapter = this.adapters.get(key);
    if (!adapter) {
      try {
        adapter = createChatProvider(endpoint, extras);
      } catch (err) {
        adapter = asProviderError(err, endpoint.provider, true);
      }
      this.adapters.set(key, adapter);
    }
    if (adapter instanceof ProviderError) throw adapter;
    return adapter;
  }

  /** The chain for one request: the balanced pick first, then the rest in chain order. */
  private order(route: Route): Runtime[] {
    const now = Date.now();
    const fallbacks = (route.fallbacks ?? []).filter((d) => d.breaker.available(now));
    return [...this.balance(route, now), ...fallbacks];
  }

  private balance(route: Route, now: number): Runtime[] {
    const healthy = route.deployments.filter((d) => d.breaker.available(now));
    if (route.strategy === 'ordered' || healthy.length <= 1) return healthy;
    let total = 0;
    for (const d of healthy) total += d.weight;
    if (total <= 0) return healthy;
    let r = this.random() * total;
    let first = healthy[0] as Runtime;
    for (const d of healthy) {
      if (d.weight <= 0) continue;
      first = d;
      r -= d.weight;
      if (r < 0) break;
    }
    return [first, ...healthy.filter((d) => d !== first)];
  }

  private retryDelay(err: ProviderError, retry: number): number {
    const base = Math.min(this.settings.backoffMaxMs, this.settings.backoffBaseMs * 2 ** retry);
    // Equal jitter: never less than half the backoff, so retries still spread out under load.
    const backoff = base / 2 + (this.random() * base) / 2;
    if (err.retryAfterMs === undefined) return backoff;
    // Never sooner than the provider asked; a little jitter on top so waiters do not stampede.
    return err.retryAfterMs + this.random() * Math.min(base, 1000) * 0.25;
  }

  /**
   * Streams a reply for `modelId` (`<provider>/<model>` or an alias). Yields `route` first (once,
   * when the chosen deployment starts answering), then deltas, usage and finish. Throws
   * ProviderError: `not_found` for an unknown model id, the last attempt's error when every
   * deployment failed before the first token, `stream_cut` when one failed after it, `cancelled`
   * when `request.signal` aborted.
   */
  async *stream(
    modelId: string,
    request: RoutedChatRequest,
    options: RouteOptions = {},
  ): AsyncGenerator<RoutedStreamEvent, void, undefined> {
    const route = this.route(modelId);
    if (!route)
      throw new ProviderError({
        kind: 'not_found',
        provider: 'router',
        status: 404,
        message: `unknown model "${modelId}": use <provider>/<model> with an enabled provider (${this.enabledProviders().join(', ')}) or an alias`,
        publicMessage: `unknown model "${modelId}": use <provider>/<model> with an enabled provider (${this.enabledProviders().join(', ')}) or an alias`,
        retryable: false,
        beforeFirstToken: true,
      });
    const deadline = Date.now() + (options.timeoutMs ?? this.settings.requestTimeoutMs);
    const chain = this.order(route);
    let lastError: ProviderError | undefined;
    let previous: Runtime | undefined;
    let attempt = 0;

    for (const d of chain) {
      let pass = d.breaker.acquire();
      if (!pass) continue;
      if (previous && lastError)
        this.call('onFallback', { modelId, from: previous.id, to: d.id, error: lastError });
      previous = d;
      for (let retry = 0; ; retry++) {
        if (retry > 0) {
          pass = d.breaker.acquire();
          if (!pass) break;
        }
        const remaining = deadline - Date.now();
        if (remaining <= 0) {
          d.breaker.release(pass);
          throw (
            lastError ??
            new ProviderError({
              kind: 'timeout',
              provider: d.provider,
              message: 'request budget exhausted',
              beforeFirstToken: true,
            })
          );
        }
        attempt++;
        const err = yield* this.attempt(d, pass, modelId, request, remaining, attempt, retry);
        if (!err) return;
        lastError = err;
        if (!err.retryable) {
          if (deploymentFault(err)) break;
          throw err;
        }
        if (retry >= d.maxRetries || d.breaker.state === 'open') break;
        const delay = this.retryDelay(err, retry);
        // A wait longer than what is left (or than we are willing to wait) goes down the chain
        // instead; with no chain left, the caller gets the error and its Retry-After.
        if (delay > deadline - Date.now() || delay > this.settings.maxRetryDelayMs) break;
        if (!(await sleep(delay, request.signal)))
          throw new ProviderError({
            kind: 'cancelled',
            provider: d.provider,
            message: 'request cancelled',
            beforeFirstToken: true,
          });
      }
    }
    throw (
      lastError ??
      new ProviderError({
        kind: 'server',
        provider: route.deployments[0]?.provider ?? 'router',
        status: 503,
        message: `every deployment of "${modelId}" is unavailable (circuit open)`,
        publicMessage: `every deployment of "${modelId}" is unavailable (circuit open)`,
        retryable: true,
        beforeFirstToken: true,
      })
    );
  }

  /** One try on one deployment. Returns the error when it failed before the first token. */
  private async *attempt(
    d: Runtime,
    pass: CircuitPass,
    modelId: string,
    request: RoutedChatRequest,
    remaining: number,
    attempt: number,
    retry: number,
  ): AsyncGenerator<RoutedStreamEvent, ProviderError | undefined, undefined> {
    const startedAt = Date.now();
    let firstAt: number | undefined;
    let usage: AttemptRecord['usage'];
    let settled = false;
    const record = (outcome: AttemptRecord['outcome'], error?: ProviderError) =>
      this.call('onAttempt', {
        modelId,
        deploymentId: d.id,
        provider: d.provider,
        model: d.model,
        attempt,
        retry,
        outcome,
        ...(error ? { error } : {}),
        startedAt,
        durationMs: Date.now() - startedAt,
        ...(firstAt !== undefined ? { timeToFirstTokenMs: firstAt - startedAt } : {}),
        ...(usage ? { usage } : {}),
      });
    const span = attemptSpan(d, attempt, retry);
    try {
      const adapter = this.adapterFor(d);
      const events = adapter.stream(
        { ...request, model: d.model },
        { timeoutMs: Math.min(d.timeoutMs, remaining), idleTimeoutMs: d.idleTimeoutMs },
      );
      for await (const ev of span ? within(trace.setSpan(otelContext.active(), span), events) : events) {
        if (firstAt === undefined) {
          firstAt = Date.now();
          d.breaker.responded(pass);
          span?.addEvent('first_token');
          yield { type: 'route', deploymentId: d.id, provider: d.provider, model: d.model };
        }
        if (ev.type === 'usage') {
          // A server's counts are taken as whole, non-negative numbers; anything else is not a count
          // (the caller then counts the text itself, as for a server that reports none).
          if (!isTokenCount(ev.promptTokens) || !isTokenCount(ev.completionTokens)) continue;
          usage = { promptTokens: ev.promptTokens, completionTokens: ev.completionTokens };
          span?.setAttributes({ 'gen_ai.usage.input_tokens': ev.promptTokens, 'gen_ai.usage.output_tokens': ev.completionTokens });
        }
        if (span && ev.type === 'finish') span.setAttribute('gen_ai.response.finish_reasons', [ev.reason]);
        yield ev;
      }
      settled = true;
      d.breaker.success(pass);
      record('success');
      span?.end();
      return undefined;
    } catch (e) {
      settled = true;
      const err = asProviderError(e, d.provider, firstAt === undefined);
      if (span) {
        span.setAttribute('error.type', err.kind);
        span.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
        span.end();
      }
      if (err.kind === 'cancelled') {
        d.breaker.release(pass);
        record('cancelled', err);
        throw err;
      }
      if (countsAgainstCircuit(err)) d.breaker.failure(pass);
      else d.breaker.release(pass);
      record('error', err);
      if (firstAt !== undefined) {
        throw new ProviderError({
          kind: 'stream_cut',
          provider: d.provider,
          ...(err.status !== undefined ? { status: err.status } : {}),
          message:
            err.kind === 'stream_cut'
              ? err.message
              : `${d.provider} failed after the reply started (${err.kind}): ${err.message}`,
          beforeFirstToken: false,
          cause: err,
        });
      }
      return err;
    } finally {
      if (!settled) {
        // The consumer stopped reading (client went away): the adapter closed the connection.
        d.breaker.release(pass);
        record('cancelled');
        span?.setAttribute('error.type', 'cancelled');
        span?.end();
      }
    }
  }

  /** The whole reply at once, with the deployment that produced it. */
  async complete(
    modelId: string,
    request: RoutedChatRequest,
    options: RouteOptions = {},
  ): Promise<Completion & { route: RouteEvent }> {
    let route: RouteEvent | undefined;
    const events = this.stream(modelId, request, options);
    const tap = async function* (): AsyncGenerator<RoutedStreamEvent> {
      for await (const ev of events) {
        if (ev.type === 'route') route = ev;
        yield ev;
      }
    };
    const completion = await collectCompletion(tap());
    return { ...completion, route: route as RouteEvent };
  }

  async close(): Promise<void> {
    clearInterval(this.discovery?.timer);
    this.discovery = undefined;
    const adapters = [...this.adapters.values()].filter(
      (a): a is ChatProvider => !(a instanceof ProviderError),
    );
    this.adapters.clear();
    await Promise.all(adapters.map((a) => a.close()));
  }
}

/** A token count as the usage event carries it: a whole number, zero or more. */
function isTokenCount(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/**
 * Inside a trace, one CLIENT span per attempt (`chat <model>`, OpenTelemetry's GenAI conventions);
 * the provider's HTTP call is its child. None outside a trace or with tracing off.
 */
function attemptSpan(d: Runtime, attempt: number, retry: number): Span | undefined {
  const parent = otelContext.active();
  if (!trace.getSpan(parent)) return undefined;
  return trace.getTracer('@vivier/providers').startSpan(
    `chat ${d.model}`,
    {
      kind: SpanKind.CLIENT,
      attributes: {
        'gen_ai.operation.name': 'chat',
        'gen_ai.provider.name': d.provider,
        'gen_ai.request.model': d.model,
        'vivier.deployment': d.id,
        'vivier.attempt': attempt,
        'vivier.retry': retry,
      },
    },
    parent,
  );
}

/** Iterates `source` with every step in `ctx`, so what it starts (its HTTP request) is a child of that span. */
async function* within<T>(ctx: Context, iterable: AsyncIterable<T>): AsyncGenerator<T> {
  const source = iterable[Symbol.asyncIterator]();
  try {
    for (;;) {
      const step = await otelContext.with(ctx, () => source.next());
      if (step.done) return;
      yield step.value;
    }
  } finally {
    await source.return?.(undefined);
  }
}

export function createProviderRouter(
  config: ProvidersConfig,
  options: ProviderRouterOptions = {},
): ProviderRouter {
  return new ProviderRouter(config, options);
}

/** Reads the environment and `PROVIDERS_FILE` (throws ProvidersConfigError) and builds the router. */
export function createProviderRouterFromEnv(
  env: ProviderEnv = process.env,
  options: ProviderRouterOptions = {},
): ProviderRouter {
  return new ProviderRouter(loadProvidersConfig(env), options);
}
