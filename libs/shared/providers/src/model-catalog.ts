// Context windows of well-known models, for context budgeting and `/api/v1/models`. Vendors add
// models faster than releases ship, so lookups match by prefix (`gpt-4o-2024-08-06` → `gpt-4o`)
// and anything unknown gets a conservative default; a deployment can state its own window.

/** For a model nobody told us about: small enough that context budgeting never overflows it. */
export const DEFAULT_CONTEXT_WINDOW = 8192;
/** Ollama's own default `num_ctx`: it silently drops what does not fit, whatever the model could do. */
export const OLLAMA_DEFAULT_CONTEXT_WINDOW = 4096;

export interface KnownModel {
  model: string;
  contextWindow: number;
  /** Listed by `listModels()` when the provider is enabled; the rest only answer lookups. */
  listed?: boolean;
}

export const KNOWN_MODELS: Readonly<Record<string, readonly KnownModel[]>> = {
  openai: [
    { model: 'gpt-5', contextWindow: 400_000, listed: true },
    { model: 'gpt-5-mini', contextWindow: 400_000, listed: true },
    { model: 'gpt-5-nano', contextWindow: 400_000 },
    { model: 'gpt-4.1', contextWindow: 1_047_576, listed: true },
    { model: 'gpt-4.1-mini', contextWindow: 1_047_576, listed: true },
    { model: 'gpt-4.1-nano', contextWindow: 1_047_576 },
    { model: 'gpt-4o', contextWindow: 128_000, listed: true },
    { model: 'gpt-4o-mini', contextWindow: 128_000, listed: true },
    { model: 'gpt-4-turbo', contextWindow: 128_000 },
    { model: 'gpt-4', contextWindow: 8_192 },
    { model: 'gpt-3.5-turbo', contextWindow: 16_385 },
    { model: 'o4-mini', contextWindow: 200_000, listed: true },
    { model: 'o3', contextWindow: 200_000 },
    { model: 'o3-mini', contextWindow: 200_000 },
    { model: 'o1', contextWindow: 200_000 },
  ],
  anthropic: [
    { model: 'claude-opus-4-1', contextWindow: 200_000, listed: true },
    { model: 'claude-opus-4', contextWindow: 200_000 },
    { model: 'claude-sonnet-4-5', contextWindow: 200_000, listed: true },
    { model: 'claude-sonnet-4', contextWindow: 200_000 },
    { model: 'claude-haiku-4-5', contextWindow: 200_000, listed: true },
    { model: 'claude-3-7-sonnet', contextWindow: 200_000 },
    { model: 'claude-3-5-sonnet', contextWindow: 200_000 },
    { model: 'claude-3-5-haiku', contextWindow: 200_000 },
    { model: 'claude-3-haiku', contextWindow: 200_000 },
  ],
  gemini: [
    { model: 'gemini-2.5-pro', contextWindow: 1_048_576, listed: true },
    { model: 'gemini-2.5-flash', contextWindow: 1_048_576, listed: true },
    { model: 'gemini-2.5-flash-lite', contextWindow: 1_048_576, listed: true },
    { model: 'gemini-2.0-flash', contextWindow: 1_048_576, listed: true },
    { model: 'gemini-1.5-pro', contextWindow: 2_097_152 },
    { model: 'gemini-1.5-flash', contextWindow: 1_048_576 },
  ],
  ollama: [],
  sim: [
    { model: 'fast', contextWindow: 128_000, listed: true },
    { model: 'smart', contextWindow: 128_000, listed: true },
  ],
};

// Built once: every entry of every provider, longest names first, so the most specific prefix wins.
const BY_PREFIX: ReadonlyArray<readonly [string, number]> = Object.entries(KNOWN_MODELS)
  .filter(([provider]) => provider !== 'sim')
  .flatMap(([, models]) => models)
  .map((m) => [m.model, m.contextWindow] as const)
  .sort((a, b) => b[0].length - a[0].length);

/**
 * The context window of `model` served by a provider of `kind`. Looks at the model name after
 * any `vendor/` prefix (OpenRouter-style names) so compatible servers benefit from the table.
 */
export function contextWindowFor(kind: string, model: string): number {
  if (kind === 'ollama') return OLLAMA_DEFAULT_CONTEXT_WINDOW;
  if (kind === 'sim') return 128_000;
  const name = model.slice(model.lastIndexOf('/') + 1).toLowerCase();
  for (const [prefix, window] of BY_PREFIX) if (name.startsWith(prefix)) return window;
  return DEFAULT_CONTEXT_WINDOW;
}
