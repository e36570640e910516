// @vivier/providers: AI provider adapters behind one streaming interface, the router that
// balances, retries, falls back and circuit-breaks across them, and the SSRF guard for
// provider URLs set through the admin API, and the admin API's provider settings laid over the
// configuration a service started with.
export {
  ProviderError,
  isProviderError,
  type CallOptions,
  type ChatMessage,
  type ChatProvider,
  type ChatRequest,
  type ChatRole,
  type Completion,
  type ContentPart,
  type DeltaEvent,
  type FinishEvent,
  type FinishReason,
  type ImagePart,
  type ProviderErrorInit,
  type ProviderErrorKind,
  type StreamEvent,
  type TextPart,
  type Usage,
  type UsageEvent,
} from './types.js';
export { collectCompletion } from './completion.js';
export { SseParser, type SseEvent } from './sse-parser.js';
export { NdjsonParser } from './ndjson-parser.js';
export { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_TIMEOUT_MS } from './http-transport.js';
export {
  countPromptTokens,
  countRecurringTokens,
  countTokens,
  loadTokenizer,
  IMAGE_TOKENS,
  type Tokenizer,
  type TokenizerName,
} from './token-counter.js';
export {
  createOpenAIProvider,
  createOpenAICompatibleProvider,
  OPENAI_DEFAULT_BASE_URL,
  type OpenAIProviderOptions,
} from './openai.adapter.js';
export {
  createAnthropicProvider,
  ANTHROPIC_DEFAULT_BASE_URL,
  ANTHROPIC_DEFAULT_MAX_TOKENS,
  ANTHROPIC_DEFAULT_VERSION,
  type AnthropicProviderOptions,
} from './anthropic.adapter.js';
export {
  createGeminiProvider,
  GEMINI_DEFAULT_BASE_URL,
  type GeminiProviderOptions,
} from './gemini.adapter.js';
export {
  createOllamaProvider,
  ollamaBaseUrl,
  OLLAMA_DEFAULT_HOST,
  type OllamaProviderOptions,
} from './ollama.adapter.js';
export { createSimProvider, simReply, SIM_MODELS, type SimProviderOptions } from './sim.adapter.js';
export { createChatProvider, type EndpointExtras } from './provider-endpoint.js';
export {
  contextWindowFor,
  DEFAULT_CONTEXT_WINDOW,
  KNOWN_MODELS,
  OLLAMA_DEFAULT_CONTEXT_WINDOW,
  type KnownModel,
} from './model-catalog.js';
export {
  AliasSchema,
  BUILT_IN_PROVIDERS,
  DeploymentSchema,
  PROVIDER_KINDS,
  ProviderEntrySchema,
  ProvidersFileSchema,
  RouterSettingsSchema,
  type AliasEntry,
  type BuiltInProvider,
  type DeploymentEntry,
  type ProviderEntry,
  type ProviderKind,
  type ProvidersFile,
  type RouterSettingsEntry,
} from './providers-file.schema.js';
export {
  loadProvidersConfig,
  parseProvidersFile,
  resolveProvidersConfig,
  PROVIDER_ENV_VARS,
  providerConfigProperties,
  providersFromConfig,
  ProvidersConfigError,
  type AliasConfig,
  type ConfigIssue,
  type DeploymentConfig,
  type EndpointConfig,
  type ProviderEnv,
  type ProvidersConfig,
  type RouterSettings,
} from './providers-config.js';
export {
  CircuitBreaker,
  type CircuitChange,
  type CircuitPass,
  type CircuitSnapshot,
  type CircuitState,
} from './circuit-breaker.js';
export {
  ProviderRouter,
  createProviderRouter,
  createProviderRouterFromEnv,
  type AttemptRecord,
  type DiscoveryResult,
  type FallbackRecord,
  type ModelInfo,
  type ProviderRouterOptions,
  type ResolvedModel,
  type RouteEvent,
  type RouteOptions,
  type RoutedChatRequest,
  type RoutedStreamEvent,
  type RouterHooks,
} from './provider-router.js';
export {
  assertSafeProviderUrl,
  blockedAddressReason,
  checkProviderUrlSyntax,
  createGuardedLookup,
  parseAllowedHosts,
  UnsafeProviderUrlError,
  type HostResolver,
} from './ssrf.js';
export { providerMetricsHooks } from './provider-metrics.js';
export {
  applyProviderSettings,
  type AppliedProviderSettings,
  type ProviderSettings,
  type SkippedProvider,
} from './provider-settings.js';
export {
  ProviderSettingsSync,
  type ProviderSettingsSyncOptions,
  type StoredProviderSettings,
  type SyncLogger,
} from './provider-settings-sync.js';
export {
  DEV_PROVIDER_KEY_ENCRYPTION_KEY,
  masterKeyId,
  masterKeyProblem,
  openEventSecret,
  previousProviderKeys,
  providerKeyConfigIssues,
  providerKeyConfigProperties,
  providerMasterKeys,
  providerSettingsConfigProperties,
  sealEventSecret,
} from './provider-key-secrets.js';
