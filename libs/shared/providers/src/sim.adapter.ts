// The built-in simulator provider: in-process, no network. It is what a fresh install talks to
// when no provider key is configured, and what benchmarks use with the pacing turned off.
// Replies are plausible sentences seeded by the model and prompt (the same request always gets
// the same reply); a last user message starting with `echo:` is echoed back.
import { collectCompletion } from './completion.js';
import { DEFAULT_TIMEOUT_MS } from './http-transport.js';
import { countPromptTokens, countTokens, type TokenizerName } from './token-counter.js';
import {
  ProviderError,
  type CallOptions,
  type ChatMessage,
  type ChatProvider,
  type ChatRequest,
  type Completion,
  type StreamEvent,
} from './types.js';

export interface SimProviderOptions {
  provider?: string;
  /** Pace of the reply. Default 40; 0 sends everything at once. */
  tokensPerSecond?: number;
  /** Wait before the first token. Default 300 ms; 0 for benchmarks. */
  firstTokenLatencyMs?: number;
  /** Counts the usage it reports. Default o200k_base. */
  tokenizer?: TokenizerName;
}

export const SIM_MODELS = ['fast', 'smart'] as const;

function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SUBJECTS = [
  'The system',
  'A careful reader',
  'Each request',
  'The simulator',
  'A small team',
  'The next step',
  'This approach',
  'Every reply',
];
const VERBS = [
  'explains',
  'shows',
  'keeps',
  'builds',
  'checks',
  'follows',
  'improves',
  'describes',
  'measures',
  'balances',
];
const OBJECTS = [
  'the main idea',
  'a simple answer',
  'the useful details',
  'each part of the question',
  'a clear example',
  'the important trade-offs',
  'the context you gave',
  'a steady rhythm',
];
const TAILS = [
  'in plain words.',
  'without surprises.',
  'one step at a time.',
  'as expected.',
  'for this conversation.',
  'with care.',
  'before moving on.',
  'so it stays readable.',
];

function pick<T>(r: () => number, list: readonly T[]): T {
  return list[Math.floor(r() * list.length)] as T;
}

/** Word-sized pieces (leading space included) whose concatenation is the text. */
function pieces(text: string): string[] {
  return text.match(/\s*\S+|\s+/g) ?? [];
}

function textOf(content: ChatMessage['content']): string {
  if (typeof content === 'string') return content;
  return content.map((p) => (p.type === 'text' ? p.text : '')).join('');
}

/** The reply for a request: echo, or seeded sentences of 20–60 words. */
export function simReply(request: ChatRequest): string[] {
  let lastUser = '';
  let images = 0;
  let chars = 0;
  for (const m of request.messages) {
    const t = textOf(m.content);
    chars += t.length;
    if (typeof m.content !== 'string') images += m.content.filter((p) => p.type === 'image').length;
    if (m.role === 'user') lastUser = t;
  }
  const echo = /^\s*echo:/i.exec(lastUser);
  if (echo) return pieces(lastUser.slice(echo[0].length).replace(/^ /, ''));
  const seed = hash32(`${request.model}\u0000${lastUser}\u0000${chars}`);
  const r = rng(seed);
  const target = 20 + (seed % 41);
  const words: string[] = [];
  if (images > 0) words.push(...`I see ${images} image${images === 1 ? '' : 's'}.`.split(' '));
  while (words.length < target)
    words.push(...`${pick(r, SUBJECTS)} ${pick(r, VERBS)} ${pick(r, OBJECTS)} ${pick(r, TAILS)}`.split(' '));
  return words.map((w, i) => (i === 0 ? w : ` ${w}`));
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new Error('aborted'));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(new Error('aborted'));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

class SimProvider implements ChatProvider {
  readonly provider: string;
  private readonly tokensPerSecond: number;
  private readonly firstTokenLatencyMs: number;
  private readonly tokenizer: TokenizerName;

  constructor(options: SimProviderOptions) {
    this.provider = options.provider ?? 'sim';
    this.tokensPerSecond = options.tokensPerSecond ?? 40;
    this.firstTokenLatencyMs = options.firstTokenLatencyMs ?? 300;
    this.tokenizer = options.tokenizer ?? 'o200k_base';
  }

  async *stream(request: ChatRequest, options?: CallOptions): AsyncGenerator<StreamEvent> {
    const deadline = Date.now() + (options?.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    let emitted = false;
    const fail = (kind: 'cancelled' | 'timeout'): ProviderError =>
      new ProviderError({
        kind,
        provider: this.provider,
        message: kind === 'cancelled' ? 'request cancelled' : `${this.provider} did not finish in time`,
        beforeFirstToken: !emitted,
      });
    const wait = async (ms: number): Promise<void> => {
      if (ms <= 0) {
        if (request.signal?.aborted) throw fail('cancelled');
        return;
      }
      if (Date.now() + ms > deadline) throw fail('timeout');
      try {
        await sleep(ms, request.signal);
      } catch {
        throw fail('cancelled');
      }
    };

    let reply = simReply(request);
    let reason: 'stop' | 'length' = 'stop';
    if (request.maxTokens !== undefined && reply.length > request.maxTokens) {
      reply = reply.slice(0, Math.max(0, request.maxTokens));
      reason = 'length';
    }
    await wait(this.firstTokenLatencyMs);
    const interval = this.tokensPerSecond > 0 ? 1000 / this.tokensPerSecond : 0;
    let text = '';
    for (let i = 0; i < reply.length; i++) {
      if (i > 0) await wait(interval);
      const piece = reply[i] as string;
      text += piece;
      emitted = true;
      yield { type: 'delta', text: piece };
    }
    const [promptTokens, completionTokens] = await Promise.all([
      request.promptTokens ?? countPromptTokens(request.messages, this.tokenizer),
      countTokens(text, this.tokenizer),
    ]);
    yield { type: 'usage', promptTokens, completionTokens };
    yield { type: 'finish', reason };
  }

  complete(request: ChatRequest, options?: CallOptions): Promise<Completion> {
    return collectCompletion(this.stream(request, options));
  }

  async close(): Promise<void> {
    // Nothing to release: no sockets, no timers outlive a stream.
  }
}

/** The in-process simulator (`sim/fast`, `sim/smart`, any model name accepted). */
export function createSimProvider(options: SimProviderOptions = {}): ChatProvider {
  return new SimProvider(options);
}
