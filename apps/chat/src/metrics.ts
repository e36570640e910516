import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { providerMetricsHooks, type ProviderRouter, type RouterHooks } from '@vivier/providers';

/** The chat service's own Prometheus metrics (in the app's registry). */
export function createChatMetrics(registry: Registry) {
  return {
    replies: new Counter({
      name: 'vivier_chat_replies_total',
      help: 'Replies that ended, by final status and whether the response cache answered.',
      labelNames: ['status', 'cached'] as const,
      registers: [registry],
    }),
    repliesInFlight: new Gauge({ name: 'vivier_chat_replies_in_flight', help: 'Replies running on this instance.', registers: [registry] }),
    timeToFirstToken: new Histogram({
      name: 'vivier_chat_time_to_first_token_seconds',
      help: 'From the provider call to the first text of a reply.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
      registers: [registry],
    }),
    cacheHits: new Counter({ name: 'vivier_chat_response_cache_hits_total', help: 'Replies answered from the response cache.', registers: [registry] }),
    cacheMisses: new Counter({
      name: 'vivier_chat_response_cache_misses_total',
      help: 'Cacheable requests (temperature 0) the response cache could not answer.',
      registers: [registry],
    }),
    providerAttempts: new Counter({
      name: 'vivier_chat_provider_attempts_total',
      help: 'Attempts on provider deployments, by outcome (success, error, cancelled) and error kind.',
      labelNames: ['deployment', 'provider', 'outcome', 'kind'] as const,
      registers: [registry],
    }),
    providerFallbacks: new Counter({
      name: 'vivier_chat_provider_fallbacks_total',
      help: 'Moves down a fallback chain, by the deployment left.',
      labelNames: ['from', 'to'] as const,
      registers: [registry],
    }),
    circuitChanges: new Counter({
      name: 'vivier_chat_provider_circuit_changes_total',
      help: 'Circuit breaker transitions per deployment.',
      labelNames: ['deployment', 'to'] as const,
      registers: [registry],
    }),
    quotaRejections: new Counter({ name: 'vivier_chat_quota_rejections_total', help: 'Sends refused with quota_exceeded.', registers: [registry] }),
    contextTruncations: new Counter({
      name: 'vivier_chat_context_truncations_total',
      help: "Sends whose context left out history the chat's summary does not cover (each asks the worker for a summary).",
      registers: [registry],
    }),
    summarizedContexts: new Counter({
      name: 'vivier_chat_summarized_contexts_total',
      help: "Replies asked with the chat's summary in place of its older messages.",
      registers: [registry],
    }),
  };
}

export type ChatMetrics = ReturnType<typeof createChatMetrics>;

/** Router hooks that feed the metrics above, and the providers' own (vivier_provider_*, by provider and model). */
export function routerHooks(metrics: () => ChatMetrics | undefined, registry: Registry): RouterHooks {
  const providers = providerMetricsHooks(registry);
  return {
    onAttempt: (record) => {
      metrics()?.providerAttempts.inc({ deployment: record.deploymentId, provider: record.provider, outcome: record.outcome, kind: record.error?.kind ?? '' });
      providers.onAttempt(record);
    },
    onFallback: (record) => metrics()?.providerFallbacks.inc({ from: record.from, to: record.to }),
    onCircuitChange: (change) => metrics()?.circuitChanges.inc({ deployment: change.deploymentId, to: change.to }),
  };
}

/** `vivier_chat_provider_circuit_open{deployment}`: 1 while a deployment's circuit is open. */
export function circuitGauge(registry: Registry, router: () => ProviderRouter | undefined): Gauge {
  return new Gauge({
    name: 'vivier_chat_provider_circuit_open',
    help: '1 while the circuit of a deployment is open (requests skip it), 0.5 half-open, 0 closed.',
    labelNames: ['deployment'] as const,
    registers: [registry],
    collect() {
      for (const circuit of router()?.circuits() ?? []) {
        this.set({ deployment: circuit.deploymentId }, circuit.state === 'open' ? 1 : circuit.state === 'half_open' ? 0.5 : 0);
      }
    },
  });
}
