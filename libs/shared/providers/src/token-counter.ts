// Token counts for providers that report none (some OpenAI-compatible servers, the in-process
// simulator). The BPE ranks are megabytes of data, so each encoder is loaded once, on first use.
import type { Tiktoken } from 'js-tiktoken/lite';
import type { ChatMessage, Usage } from './types.js';

export type TokenizerName = 'o200k_base' | 'cl100k_base';

/** What OpenAI bills a low-detail image; a stated estimate for the others. */
export const IMAGE_TOKENS = 85;
/** Per-message framing (role and separators) and the reply primer, as in OpenAI's cookbook. */
const TOKENS_PER_MESSAGE = 4;
const REPLY_PRIMER = 3;

const encoders = new Map<TokenizerName, Promise<Tiktoken>>();

export function loadTokenizer(name: TokenizerName = 'o200k_base'): Promise<Tiktoken> {
  let encoder = encoders.get(name);
  if (!encoder) {
    encoder = (async () => {
      const [{ Tiktoken }, ranks] = await Promise.all([
        import('js-tiktoken/lite'),
        name === 'o200k_base'
          ? import('js-tiktoken/ranks/o200k_base')
          : import('js-tiktoken/ranks/cl100k_base'),
      ]);
      return new Tiktoken(ranks.default);
    })();
    // A failed load must not be cached forever.
    encoder.catch(() => encoders.delete(name));
    encoders.set(name, encoder);
  }
  return encoder;
}

function countWith(encoder: Tiktoken, text: string): number {
  // Special-token text in a reply is plain text here, never a reason to throw.
  return text.length === 0 ? 0 : encoder.encode(text, [], []).length;
}

export async function countTokens(text: string, tokenizer: TokenizerName = 'o200k_base'): Promise<number> {
  return countWith(await loadTokenizer(tokenizer), text);
}

/** Prompt tokens the way OpenAI counts chat messages: 4 per message, 3 for the primer, 85 per image. */
export async function countPromptTokens(
  messages: readonly ChatMessage[],
  tokenizer: TokenizerName = 'o200k_base',
): Promise<number> {
  const encoder = await loadTokenizer(tokenizer);
  let total = REPLY_PRIMER;
  for (const m of messages) {
    total += TOKENS_PER_MESSAGE;
    if (typeof m.content === 'string') total += countWith(encoder, m.content);
    else
      for (const part of m.content)
        total += part.type === 'text' ? countWith(encoder, part.text) : IMAGE_TOKENS;
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
