// From an endpoint's configuration to the adapter that speaks its protocol.
import { createAnthropicProvider } from './anthropic.adapter.js';
import { createGeminiProvider } from './gemini.adapter.js';
import { createOllamaProvider } from './ollama.adapter.js';
import { createOpenAICompatibleProvider, createOpenAIProvider } from './openai.adapter.js';
import type { EndpointConfig } from './providers-config.js';
import { createSimProvider } from './sim.adapter.js';
import { checkProviderUrlSyntax } from './ssrf.js';
import type { ChatProvider } from './types.js';

export interface EndpointExtras {
  /** Ollama `num_ctx` (a deployment's context window). */
  numCtx?: number;
  /** `PROVIDER_ALLOWED_HOSTS`, for endpoints marked untrusted. */
  allowedHosts?: readonly string[];
}

/**
 * Builds the adapter for one endpoint. An untrusted endpoint's URL is checked now (scheme and
 * literal addresses: connections to an IP literal never consult DNS, so the connect-time check
 * alone would miss them) and its pool resolves names through the SSRF guard on every connection.
 * Throws UnsafeProviderUrlError for a refused URL.
 */
export function createChatProvider(endpoint: EndpointConfig, extras: EndpointExtras = {}): ChatProvider {
  const allowlist = extras.allowedHosts ?? [];
  let guard: { allowlist: readonly string[] } | undefined;
  if (endpoint.untrusted && endpoint.kind !== 'sim') {
    if (endpoint.baseUrl !== undefined) checkProviderUrlSyntax(endpoint.baseUrl, allowlist);
    guard = { allowlist };
  }
  const common = {
    provider: endpoint.provider,
    ...(endpoint.baseUrl !== undefined ? { baseUrl: endpoint.baseUrl } : {}),
    ...(endpoint.apiKey !== undefined ? { apiKey: endpoint.apiKey } : {}),
    ...(endpoint.headers !== undefined ? { headers: endpoint.headers } : {}),
    ...(guard ? { guard } : {}),
  };
  switch (endpoint.kind) {
    case 'openai':
    case 'openai_compatible': {
      const options = {
        ...common,
        ...(endpoint.includeUsage !== undefined ? { includeUsage: endpoint.includeUsage } : {}),
        ...(endpoint.maxTokensField !== undefined ? { maxTokensField: endpoint.maxTokensField } : {}),
        ...(endpoint.tokenizer !== undefined ? { tokenizer: endpoint.tokenizer } : {}),
      };
      if (endpoint.kind === 'openai') return createOpenAIProvider(options);
      if (options.baseUrl === undefined)
        throw new Error(`${endpoint.provider}: an OpenAI-compatible provider needs a baseUrl`);
      return createOpenAICompatibleProvider({ ...options, baseUrl: options.baseUrl });
    }
    case 'anthropic':
      return createAnthropicProvider({
        ...common,
        ...(endpoint.anthropicVersion !== undefined ? { version: endpoint.anthropicVersion } : {}),
      });
    case 'gemini':
      return createGeminiProvider(common);
    case 'ollama':
      return createOllamaProvider({
        ...common,
        ...(extras.numCtx !== undefined ? { numCtx: extras.numCtx } : {}),
      });
    case 'sim':
      return createSimProvider({
        provider: endpoint.provider,
        ...(endpoint.tokensPerSecond !== undefined ? { tokensPerSecond: endpoint.tokensPerSecond } : {}),
        ...(endpoint.firstTokenLatencyMs !== undefined
          ? { firstTokenLatencyMs: endpoint.firstTokenLatencyMs }
          : {}),
        ...(endpoint.tokenizer !== undefined ? { tokenizer: endpoint.tokenizer } : {}),
      });
  }
}

/** Identity of an adapter: deployments whose endpoint settings are equal share one. */
export function endpointKey(endpoint: EndpointConfig, extras: EndpointExtras = {}): string {
  return JSON.stringify([
    endpoint.kind,
    endpoint.provider,
    endpoint.baseUrl ?? '',
    endpoint.apiKey ?? '',
    endpoint.headers ?? {},
    endpoint.untrusted ?? false,
    endpoint.anthropicVersion ?? '',
    endpoint.includeUsage ?? '',
    endpoint.maxTokensField ?? '',
    endpoint.tokenizer ?? '',
    endpoint.tokensPerSecond ?? '',
    endpoint.firstTokenLatencyMs ?? '',
    endpoint.kind === 'ollama' ? (extras.numCtx ?? '') : '',
  ]);
}
