// Provider settings made at run time through the admin API (`provider.configured`), laid over the
// configuration a service started with (environment and providers file).
import type { AdminProviderConfiguredData } from '@vivier/contracts';
import { ANTHROPIC_DEFAULT_BASE_URL } from './anthropic.adapter.js';
import { GEMINI_DEFAULT_BASE_URL } from './gemini.adapter.js';
import { ollamaBaseUrl } from './ollama.adapter.js';
import { OPENAI_DEFAULT_BASE_URL } from './openai.adapter.js';
import type { DeploymentConfig, EndpointConfig, ProvidersConfig } from './providers-config.js';

/** One provider as the admin API last set it, with its API key opened (in memory only). */
export interface ProviderSettings {
  providerId: string;
  kind: AdminProviderConfiguredData['kind'];
  enabled: boolean;
  /** null: the endpoint the service was started with for this provider, else the vendor's. */
  baseUrl: string | null;
  /** Model names offered explicitly: each becomes a deployment, listed by `/models`. */
  models: string[];
  routing: AdminProviderConfiguredData['routing'];
  /** null: none set through the admin API (a key from the environment or the file still applies). */
  apiKey: string | null;
  revision: number;
}

export interface SkippedProvider {
  providerId: string;
  reason: string;
}

export interface AppliedProviderSettings {
  config: ProvidersConfig;
  /** Settings that could not be applied (the provider stays as configured at start, or off). */
  skipped: SkippedProvider[];
}

function vendorBaseUrl(kind: ProviderSettings['kind']): string | undefined {
  switch (kind) {
    case 'openai':
      return OPENAI_DEFAULT_BASE_URL;
    case 'anthropic':
      return ANTHROPIC_DEFAULT_BASE_URL;
    case 'gemini':
      return GEMINI_DEFAULT_BASE_URL;
    case 'ollama':
      return ollamaBaseUrl(undefined);
    case 'openai_compatible':
      return undefined;
  }
}

const NEEDS_KEY = new Set(['openai', 'anthropic', 'gemini']);

/**
 * The configuration with the admin settings applied, provider by provider (the admin settings win):
 * - `enabled: false` turns the provider off, with the deployments the file gave it (aliases lose
 *   them; an alias left with none goes).
 * - Otherwise the provider's endpoint is the admin's kind, URL (null: the one started with, if of
 *   the same kind, else the vendor's) and routing. Only on the very endpoint it started with does
 *   it keep the start key (when none is set through the API), headers and the file deployments'
 *   own settings; any other URL is untrusted (its connections are checked against SSRF, allowing
 *   only `PROVIDER_ALLOWED_HOSTS`) and gets nothing from the start configuration. Its deployments
 *   from the file take the new routing, and each listed model becomes a deployment. A vendor that
 *   needs a key and has none stays off, as it would at start, and so does a compatible server
 *   without a URL.
 * - The simulator that was on only because nothing else was goes once another provider is on.
 */
export function applyProviderSettings(base: ProvidersConfig, settings: readonly ProviderSettings[]): AppliedProviderSettings {
  const endpoints = new Map(base.providers.map((e) => [e.provider, e]));
  let deployments: DeploymentConfig[] = [...base.deployments];
  const skipped: SkippedProvider[] = [];
  const turnOff = (providerId: string) => {
    endpoints.delete(providerId);
    deployments = deployments.filter((d) => d.provider !== providerId);
  };

  for (const s of settings) {
    const id = s.providerId;
    if (!s.enabled) {
      turnOff(id);
      continue;
    }
    const started = endpoints.get(id);
    // What the service started with carries over (its key, headers, per-deployment settings) only
    // to the very endpoint it was given for: never to a URL the admin API chose, whose server
    // would otherwise receive the operator's key.
    const kept = started?.kind === s.kind && (s.baseUrl === null || s.baseUrl === started.baseUrl) ? started : undefined;
    const baseUrl = s.baseUrl ?? kept?.baseUrl ?? vendorBaseUrl(s.kind);
    const apiKey = s.apiKey ?? kept?.apiKey;
    if (baseUrl === undefined) {
      skipped.push({ providerId: id, reason: 'an openai_compatible provider needs a base URL' });
      turnOff(id);
      continue;
    }
    if (NEEDS_KEY.has(s.kind) && apiKey === undefined) {
      skipped.push({ providerId: id, reason: `no API key: ${s.kind} needs one` });
      turnOff(id);
      continue;
    }
    const endpoint: EndpointConfig = {
      ...(kept ?? {}),
      provider: id,
      kind: s.kind,
      baseUrl,
      timeoutMs: s.routing.timeoutMs,
      maxRetries: s.routing.maxRetries,
      fallbacks: [...s.routing.fallbacks],
    };
    if (apiKey !== undefined) endpoint.apiKey = apiKey;
    else delete endpoint.apiKey;
    // Any URL but the one started with is the admin API's (a vendor default included: an `ollama`
    // made through the API would otherwise reach this host's loopback unchecked).
    if (!kept) endpoint.untrusted = true;
    endpoints.set(id, endpoint);

    const { fallbacks: _fallbacks, ...inherited } = endpoint;
    const ids = new Set(deployments.map((d) => d.id));
    deployments = deployments.map((d) => {
      if (d.provider !== id) return d;
      const routing = { timeoutMs: s.routing.timeoutMs, maxRetries: s.routing.maxRetries, weight: s.routing.weight };
      // Same endpoint: the file's own settings of the deployment stay, the routing (and a key set
      // through the API) change. Another endpoint: the deployment is rebuilt on it, nothing kept.
      if (kept) return { ...d, ...routing, ...(s.apiKey !== null ? { apiKey: s.apiKey } : {}) };
      return { ...inherited, id: d.id, model: d.model, ...(d.contextWindow !== undefined ? { contextWindow: d.contextWindow } : {}), ...routing };
    });
    for (const model of s.models) {
      if (deployments.some((d) => d.provider === id && d.model === model)) continue;
      let depId = `${id}/${model}`;
      if (ids.has(depId)) depId = `${depId}#admin`;
      ids.add(depId);
      deployments.push({ ...inherited, id: depId, model, weight: s.routing.weight });
    }
  }

  if (base.simulatorFallback && [...endpoints.keys()].some((p) => p !== 'sim')) turnOff('sim');

  const kept = new Set(deployments.map((d) => d.id));
  const aliases = base.aliases
    .map((a) => ({ ...a, deployments: a.deployments.filter((d) => kept.has(d)) }))
    .filter((a) => a.deployments.length > 0);

  const { simulatorFallback: _simulatorFallback, ...rest } = base;
  return {
    config: {
      ...rest,
      providers: [...endpoints.values()],
      deployments,
      aliases,
      ...(endpoints.has('sim') && base.simulatorFallback ? { simulatorFallback: true } : {}),
    },
    skipped,
  };
}
