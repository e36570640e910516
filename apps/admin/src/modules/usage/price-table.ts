import { readFileSync } from 'node:fs';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

/** USD per million tokens, as vendors publish them (which is also micro-USD per token). */
export interface ModelPrice {
  input: number;
  output: number;
}

/**
 * List prices of common models (USD per million tokens, standard tier, 2025). An approximation to
 * give the usage page a cost out of the box; operators set their own with PRICE_TABLE_FILE.
 * Keys are model ids (`<provider>/<model>`); `<provider>/*` prices every other model of a provider.
 */
export const DEFAULT_PRICES: Readonly<Record<string, ModelPrice>> = {
  'openai/gpt-4o': { input: 2.5, output: 10 },
  'openai/gpt-4o-mini': { input: 0.15, output: 0.6 },
  'openai/gpt-4.1': { input: 2, output: 8 },
  'openai/gpt-4.1-mini': { input: 0.4, output: 1.6 },
  'openai/gpt-4.1-nano': { input: 0.1, output: 0.4 },
  'openai/gpt-5': { input: 1.25, output: 10 },
  'openai/gpt-5-mini': { input: 0.25, output: 2 },
  'openai/gpt-5-nano': { input: 0.05, output: 0.4 },
  'openai/o3': { input: 2, output: 8 },
  'openai/o4-mini': { input: 1.1, output: 4.4 },
  'anthropic/claude-opus-4-1': { input: 15, output: 75 },
  'anthropic/claude-sonnet-4-5': { input: 3, output: 15 },
  'anthropic/claude-sonnet-4': { input: 3, output: 15 },
  'anthropic/claude-haiku-4-5': { input: 1, output: 5 },
  'anthropic/claude-3-5-haiku': { input: 0.8, output: 4 },
  'gemini/gemini-2.5-pro': { input: 1.25, output: 10 },
  'gemini/gemini-2.5-flash': { input: 0.3, output: 2.5 },
  'gemini/gemini-2.5-flash-lite': { input: 0.1, output: 0.4 },
  'gemini/gemini-2.0-flash': { input: 0.1, output: 0.4 },
  'ollama/*': { input: 0, output: 0 },
  'sim/*': { input: 0, output: 0 },
};

const PriceFileSchema = Type.Record(
  Type.String({ minLength: 1, maxLength: 256 }),
  Type.Object({ input: Type.Number({ minimum: 0 }), output: Type.Number({ minimum: 0 }) }, { additionalProperties: false }),
);
type PriceFile = Static<typeof PriceFileSchema>;

export class PriceTableError extends Error {}

/**
 * Prices a reply: exact model id first, then the longest listed id the model id extends with a
 * `-` (dated versions: `openai/gpt-4o-mini-2024-07-18` → `openai/gpt-4o-mini`), then
 * `<provider>/*`; unknown models cost 0 (`priced: false`).
 */
export class PriceTable {
  private readonly exact: Map<string, ModelPrice>;
  private readonly resolved = new Map<string, ModelPrice | null>();

  constructor(prices: Record<string, ModelPrice>) {
    this.exact = new Map(Object.entries(prices));
  }

  priceOf(provider: string, model: string): ModelPrice | undefined {
    const id = model.includes('/') ? model : `${provider}/${model}`;
    let price = this.resolved.get(id);
    if (price === undefined) {
      price = this.exact.get(id) ?? this.longestPrefix(id) ?? this.exact.get(`${provider}/*`) ?? this.exact.get(`${id.split('/')[0]}/*`) ?? null;
      if (this.resolved.size < 10_000) this.resolved.set(id, price);
    }
    return price ?? undefined;
  }

  /** Cost in USD micro-units (rounded per reply). */
  costMicros(provider: string, model: string, tokensIn: number, tokensOut: number): number {
    const price = this.priceOf(provider, model);
    if (!price) return 0;
    return Math.round(tokensIn * price.input + tokensOut * price.output);
  }

  entries(): Array<[string, ModelPrice]> {
    return [...this.exact.entries()];
  }

  private longestPrefix(id: string): ModelPrice | undefined {
    let best: string | undefined;
    for (const key of this.exact.keys()) {
      if (key.endsWith('/*') || !id.startsWith(`${key}-`)) continue;
      if (!best || key.length > best.length) best = key;
    }
    return best === undefined ? undefined : this.exact.get(best);
  }
}

/** The built-in table, with the entries of `file` (if any) over it. Throws PriceTableError. */
export function loadPriceTable(file: string | undefined): PriceTable {
  if (!file) return new PriceTable({ ...DEFAULT_PRICES });
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new PriceTableError(`cannot read ${file} as JSON (${(error as Error).message})`);
  }
  if (!Value.Check(PriceFileSchema, parsed)) {
    const first = Value.Errors(PriceFileSchema, parsed).First();
    throw new PriceTableError(`${file} is invalid at ${first?.path || '/'}: ${first?.message ?? 'unexpected value'} (expected {"<provider>/<model>": {"input": <USD per 1M tokens>, "output": …}})`);
  }
  return new PriceTable({ ...DEFAULT_PRICES, ...(parsed as PriceFile) });
}
