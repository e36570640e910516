// Token counts for providers that report none (some OpenAI-compatible servers, the in-process
// simulator), and for the quota reservation of every request. The BPE ranks are megabytes of data,
// so each encoding is loaded once, on first use.
import { hash } from 'node:crypto';
import type { ChatMessage, Usage } from './types.js';

export type TokenizerName = 'o200k_base' | 'cl100k_base';

/** What OpenAI bills a low-detail image; a stated estimate for the others. */
export const IMAGE_TOKENS = 85;
/** Per-message framing (role and separators) and the reply primer, as in OpenAI's cookbook. */
const TOKENS_PER_MESSAGE = 4;
const REPLY_PRIMER = 3;

/** Counts a text's tokens in one encoding. */
export interface Tokenizer {
  count(text: string): number;
}

/**
 * Special-token text (`<|endoftext|>` typed by a user) is plain text here, counted as such,
 * never a reason to throw.
 */
const AS_PLAIN_TEXT = { disallowedSpecial: new Set<string>() };

const tokenizers = new Map<TokenizerName, Promise<Tokenizer>>();

/**
 * gpt-tokenizer's encodings (the same BPE ranks as OpenAI's tiktoken, and the same counts): about
 * 14 µs for a 40-word message and 0.35 ms for a 4,000-token history here, where js-tiktoken took
 * 78 µs and 4.8 ms (`npm run bench:tokens -w @vivier/bench`).
 */
export function loadTokenizer(name: TokenizerName = 'o200k_base'): Promise<Tokenizer> {
  let tokenizer = tokenizers.get(name);
  if (!tokenizer) {
    tokenizer = (async (): Promise<Tokenizer> => {
      const encoding =
        name === 'o200k_base'
          ? await import('gpt-tokenizer/encoding/o200k_base')
          : await import('gpt-tokenizer/encoding/cl100k_base');
      // Its cache of word pieces would keep pieces of users' texts in memory (a pasted secret among
      // them); the counts worth keeping are kept by digest in TokenCountCache instead.
      encoding.setMergeCacheSize(0);
      return { count: (text) => (text.length === 0 ? 0 : encoding.countTokens(text, AS_PLAIN_TEXT)) };
    })();
    // A failed load must not be cached forever.
    tokenizer.catch(() => tokenizers.delete(name));
    tokenizers.set(name, tokenizer);
  }
  return tokenizer;
}

/**
 * Token counts of texts seen before, least recently used dropped first past `maxEntries`. A
 * conversation sent through the OpenAI-compatible API repeats all of its history on every turn;
 * counting a text costs about 0.09 µs per token here (0.35 ms for a 4,000-token history), a lookup
 * one SHA-1 of the text, several times less. Texts are kept as their digest only: no
 * user's words stay in memory after their request, and an entry is the same size whatever the
 * text. Texts shorter than `minChars` are counted each time, so that many short messages ("ok",
 * "thanks") do not crowd out the histories.
 */
export class TokenCountCache {
  private readonly counts = new Map<string, number>();

  constructor(
    readonly maxEntries: number,
    readonly minChars = 64,
  ) {}

  get size(): number {
    return this.counts.size;
  }

  count(tokenizer: Tokenizer, text: string): number {
    if (text.length < this.minChars) return tokenizer.count(text);
    const key = hash('sha1', text, 'base64');
    const known = this.counts.get(key);
    if (known !== undefined) {
      this.counts.delete(key); // re-inserted last: the map stays in order of last use
      this.counts.set(key, known);
      return known;
    }
    const tokens = tokenizer.count(text);
    this.counts.set(key, tokens);
    if (this.counts.size > this.maxEntries) this.counts.delete(this.counts.keys().next().value!);
    return tokens;
  }
}

/** Per tokenizer; an entry is about a hundred bytes, so 100,000 of them take about 10 MiB. */
const promptCounts = new Map<TokenizerName, TokenCountCache>();
const PROMPT_CACHE_ENTRIES = 100_000;

function promptCache(name: TokenizerName): TokenCountCache {
  let cache = promptCounts.get(name);
  if (!cache) {
    cache = new TokenCountCache(PROMPT_CACHE_ENTRIES);
    promptCounts.set(name, cache);
  }
  return cache;
}

export async function countTokens(text: string, tokenizer: TokenizerName = 'o200k_base'): Promise<number> {
  return (await loadTokenizer(tokenizer)).count(text);
}

/**
 * `countTokens` for a text that comes back request after request (a chat's system prompt),
 * remembered the way prompt texts are (see TokenCountCache).
 */
export async function countRecurringTokens(text: string, tokenizer: TokenizerName = 'o200k_base'): Promise<number> {
  return promptCache(tokenizer).count(await loadTokenizer(tokenizer), text);
}

/**
 * Prompt tokens the way OpenAI counts chat messages: 4 per message, 3 for the primer, 85 per
 * image. Long texts are counted once and remembered (TokenCountCache): the history a client
 * sends again with each turn is not re-tokenised.
 */
export async function countPromptTokens(
  messages: readonly ChatMessage[],
  tokenizer: TokenizerName = 'o200k_base',
): Promise<number> {
  const counter = await loadTokenizer(tokenizer);
  const cache = promptCache(tokenizer);
  let total = REPLY_PRIMER;
  for (const m of messages) {
    total += TOKENS_PER_MESSAGE;
    if (typeof m.content === 'string') total += cache.count(counter, m.content);
    else
      for (const part of m.content)
        total += part.type === 'text' ? cache.count(counter, part.text) : IMAGE_TOKENS;
  }
  return total;
}

/** Fills in what the provider did not report; reported numbers are kept as they are. */
export async function completeUsage(
  request: { messages: readonly ChatMessage[]; promptTokens?: number | undefined },
  completionText: string,
  reported: Partial<Usage>,
  tokenizer: TokenizerName = 'o200k_base',
): Promise<Usage> {
  return {
    promptTokens: reported.promptTokens ?? request.promptTokens ?? (await countPromptTokens(request.messages, tokenizer)),
    completionTokens: reported.completionTokens ?? (await countTokens(completionText, tokenizer)),
  };
}
