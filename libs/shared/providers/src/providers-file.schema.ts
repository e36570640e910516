// The providers file (`PROVIDERS_FILE`, YAML or JSON): one TypeBox schema gives the validator and
// the static types. Cross-references (aliases naming deployments, keys, URLs) are checked after
// the schema in providers-config.ts, with messages that name the offending entry.
import { Type, type Static } from '@sinclair/typebox';
import { ProviderId, StringEnum } from '@vivier/contracts';

export const PROVIDER_KINDS = [
  'openai',
  'anthropic',
  'gemini',
  'ollama',
  'openai_compatible',
  'sim',
] as const;
export type ProviderKind = (typeof PROVIDER_KINDS)[number];

/** Providers Vivier knows by name; any other name is an endpoint declared in the file. */
export const BUILT_IN_PROVIDERS = ['openai', 'anthropic', 'gemini', 'ollama', 'sim'] as const;
export type BuiltInProvider = (typeof BUILT_IN_PROVIDERS)[number];

function oneOf<const T extends readonly [string, ...string[]]>(values: T, description: string) {
  return StringEnum(values, { description });
}

const endpointProperties = {
  kind: Type.Optional(oneOf(PROVIDER_KINDS, 'wire protocol; required for a name that is not built in')),
  baseUrl: Type.Optional(
    Type.String({
      minLength: 1,
      pattern: '^https?://',
      description: "the API's base URL (OpenAI style includes /v1)",
    }),
  ),
  apiKey: Type.Optional(Type.String({ minLength: 1, description: 'the key itself (prefer apiKeyEnv)' })),
  apiKeyEnv: Type.Optional(
    Type.String({
      pattern: '^[A-Za-z_][A-Za-z0-9_]*$',
      description: 'name of the environment variable holding the key',
    }),
  ),
  headers: Type.Optional(Type.Record(Type.String(), Type.String(), { description: 'extra request headers' })),
  untrusted: Type.Optional(
    Type.Boolean({
      description: 'base URL came from outside the operator (admin API): SSRF-guard every connection',
    }),
  ),
  anthropicVersion: Type.Optional(
    Type.String({ minLength: 1, description: 'anthropic-version header (default 2023-06-01)' }),
  ),
  includeUsage: Type.Optional(
    Type.Boolean({
      description: 'OpenAI style: ask for the usage chunk (default true); false counts tokens locally',
    }),
  ),
  maxTokensField: Type.Optional(
    oneOf(['max_completion_tokens', 'max_tokens'] as const, 'OpenAI style: name of the cap field'),
  ),
  tokenizer: Type.Optional(
    oneOf(['o200k_base', 'cl100k_base'] as const, 'tokenizer for locally counted usage'),
  ),
  tokensPerSecond: Type.Optional(Type.Number({ minimum: 0, description: 'sim: reply pace (default 40)' })),
  firstTokenLatencyMs: Type.Optional(
    Type.Integer({ minimum: 0, description: 'sim: wait before the first token (default 300)' }),
  ),
};

const routingProperties = {
  timeoutMs: Type.Optional(
    Type.Integer({ minimum: 1, maximum: 3_600_000, description: 'one attempt, start to last byte' }),
  ),
  idleTimeoutMs: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: 3_600_000,
      description: 'longest silence before the head or between chunks',
    }),
  ),
  maxRetries: Type.Optional(
    Type.Integer({ minimum: 0, maximum: 10, description: 'retries on this deployment before falling back' }),
  ),
};

export const ProviderEntrySchema = Type.Object(
  { ...endpointProperties, ...routingProperties },
  { additionalProperties: false, description: 'settings of one provider, inherited by its deployments' },
);

export const DeploymentSchema = Type.Object(
  {
    id: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9][A-Za-z0-9._:/-]*$' }),
    // The contracts' ProviderId, so a provider id fits every event that carries it.
    provider: ProviderId('a built-in provider or a name declared under `providers`'),
    model: Type.String({ minLength: 1, maxLength: 256, description: "the provider's own model name" }),
    weight: Type.Optional(
      Type.Number({
        minimum: 0,
        maximum: 1000,
        description: 'load-balancing weight (default 1; 0 = fallback only)',
      }),
    ),
    contextWindow: Type.Optional(
      Type.Integer({ minimum: 1, description: 'tokens; overrides the built-in table' }),
    ),
    ...endpointProperties,
    ...routingProperties,
  },
  { additionalProperties: false },
);

export const AliasSchema = Type.Object(
  {
    alias: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]*$' }),
    deployments: Type.Array(Type.String({ minLength: 1 }), {
      minItems: 1,
      description: 'ordered fallback chain',
    }),
    strategy: Type.Optional(
      oneOf(
        ['weighted', 'ordered'] as const,
        'weighted: spread by weight; ordered: always the first healthy',
      ),
    ),
  },
  { additionalProperties: false },
);

export const RouterSettingsSchema = Type.Object(
  {
    requestTimeoutMs: Type.Optional(
      Type.Integer({ minimum: 1, description: 'whole request budget, retries and fallbacks included' }),
    ),
    maxRetryDelayMs: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: 'longest wait before a retry; a longer Retry-After falls back',
      }),
    ),
    backoffBaseMs: Type.Optional(Type.Integer({ minimum: 0 })),
    backoffMaxMs: Type.Optional(Type.Integer({ minimum: 0 })),
    failureThreshold: Type.Optional(
      Type.Integer({ minimum: 1, description: 'consecutive failures that open a circuit' }),
    ),
    cooldownMs: Type.Optional(
      Type.Integer({ minimum: 1, description: 'open circuit → half-open after this long' }),
    ),
    discoveryIntervalMs: Type.Optional(
      Type.Integer({
        minimum: 0,
        description:
          'how often the models of Ollama and OpenAI-compatible servers are listed again (default 300000; 0: never)',
      }),
    ),
    ...routingProperties,
  },
  { additionalProperties: false },
);

export const ProvidersFileSchema = Type.Object(
  {
    providers: Type.Optional(Type.Record(Type.String(), ProviderEntrySchema)),
    deployments: Type.Optional(Type.Array(DeploymentSchema)),
    aliases: Type.Optional(Type.Array(AliasSchema)),
    router: Type.Optional(RouterSettingsSchema),
  },
  { additionalProperties: false },
);

export type ProviderEntry = Static<typeof ProviderEntrySchema>;
export type DeploymentEntry = Static<typeof DeploymentSchema>;
export type AliasEntry = Static<typeof AliasSchema>;
export type RouterSettingsEntry = Static<typeof RouterSettingsSchema>;
export type ProvidersFile = Static<typeof ProvidersFileSchema>;
