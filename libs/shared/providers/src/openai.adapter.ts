// OpenAI Chat Completions over SSE, for OpenAI itself and for every OpenAI-compatible server
// (vLLM, LM Studio, Groq, OpenRouter, …). This is the path the gateway's pass-through is
// benchmarked on, so everything that does not depend on the request is computed once.
import { HttpChatProvider } from './completion.js';
import { HttpEndpoint, modelNames, streamOverHttp, type WireDecoder } from './http-transport.js';
import { SseParser } from './sse-parser.js';
import { completeUsage, type TokenizerName } from './token-counter.js';
import {
  ProviderError,
  type CallOptions,
  type ChatMessage,
  type ChatProvider,
  type ChatRequest,
  type FinishReason,
  type ProviderErrorKind,
  type StreamEvent,
  type Usage,
} from './types.js';

export const OPENAI_DEFAULT_BASE_URL = 'https://api.openai.com/v1';

export interface OpenAIProviderOptions {
  /** Provider id used in errors and routes; `openai`, or the compatible server's name. */
  provider?: string;
  /** Includes the version path, as the official SDK's `OPENAI_BASE_URL` does (`…/v1`). */
  baseUrl?: string;
  /** Optional for compatible servers that need none. */
  apiKey?: string;
  headers?: Record<string, string>;
  /** Ask for the final usage chunk (`stream_options.include_usage`). Default true. */
  includeUsage?: boolean;
  /**
   * OpenAI deprecated `max_tokens` (its reasoning models reject it); many compatible servers know
   * only `max_tokens`. Default: `max_completion_tokens` for OpenAI, `max_tokens` otherwise.
   */
  maxTokensField?: 'max_completion_tokens' | 'max_tokens';
  /** Used when the server reports no usage. Default o200k_base. */
  tokenizer?: TokenizerName;
  /** Check every connection's address (base URLs set through the admin API). */
  guard?: { allowlist: readonly string[] };
}

type WireContent =
  string | Array<{ type: 'text'; text: string } | { type: 'image_url'; image_url: { url: string } }>;

function toWire(messages: readonly ChatMessage[]): Array<{ role: string; content: WireContent }> {
  return messages.map((m) => ({
    role: m.role,
    content:
      typeof m.content === 'string'
        ? m.content
        : m.content.map((p) =>
            p.type === 'text'
              ? { type: 'text' as const, text: p.text }
              : { type: 'image_url' as const, image_url: { url: `data:${p.mediaType};base64,${p.data}` } },
          ),
  }));
}

const FINISH: Record<string, FinishReason> = {
  stop: 'stop',
  length: 'length',
  content_filter: 'content_filter',
  tool_calls: 'stop',
  function_call: 'stop',
};

function streamErrorKind(type: unknown, code: unknown): ProviderErrorKind {
  const t = `${String(type)} ${String(code)}`;
  if (/rate_limit/.test(t)) return 'rate_limited';
  if (/invalid_request|context_length/.test(t)) return 'bad_request';
  return 'server';
}

interface ChunkShape {
  error?: { message?: unknown; type?: unknown; code?: unknown } | string;
  choices?: Array<{ delta?: { content?: unknown }; finish_reason?: unknown }>;
  usage?: { prompt_tokens?: unknown; completion_tokens?: unknown } | null;
}

class OpenAIDecoder implements WireDecoder {
  private readonly sse = new SseParser();
  private done = false;
  private finishReason: FinishReason | undefined;
  private usage: Usage | undefined;
  private text = '';

  constructor(
    private readonly provider: string,
    private readonly request: ChatRequest,
    private readonly tokenizer: TokenizerName,
  ) {}

  push(chunk: string, out: StreamEvent[]): void {
    for (const ev of this.sse.push(chunk)) this.data(ev.data, out);
  }

  private data(data: string, out: StreamEvent[]): void {
    if (this.done) return;
    if (data === '[DONE]') {
      this.done = true;
      return;
    }
    const obj = JSON.parse(data) as ChunkShape;
    if (obj.error !== undefined) {
      const e = typeof obj.error === 'string' ? { message: obj.error } : obj.error;
      throw new ProviderError({
        kind: streamErrorKind(e.type, e.code),
        provider: this.provider,
        message: `${this.provider} stream error: ${String(e.message ?? 'unknown')}`,
        beforeFirstToken: true,
      });
    }
    // The usage chunk has `choices: []`, so nothing here may assume a first choice.
    const choice = obj.choices?.[0];
    if (choice) {
      const content = choice.delta?.content;
      if (typeof content === 'string' && content.length > 0) {
        this.text += content;
        out.push({ type: 'delta', text: content });
      }
      if (typeof choice.finish_reason === 'string')
        this.finishReason = FINISH[choice.finish_reason] ?? 'stop';
    }
    const u = obj.usage;
    if (u && typeof u.prompt_tokens === 'number' && typeof u.completion_tokens === 'number')
      this.usage = { promptTokens: u.prompt_tokens, completionTokens: u.completion_tokens };
  }

  async finish(out: StreamEvent[]): Promise<void> {
    for (const ev of this.sse.end()) this.data(ev.data, out);
    // A body that ended after a finish_reason but without [DONE] is complete; some compatible
    // servers stop there. Without either, the stream was cut.
    if (!this.done && this.finishReason === undefined)
      throw new ProviderError({
        kind: 'stream_cut',
        provider: this.provider,
        message: `${this.provider} stream ended without [DONE]`,
        beforeFirstToken: true,
      });
    const usage = this.usage ?? (await completeUsage(this.request, this.text, {}, this.tokenizer));
    out.push({ type: 'usage', promptTokens: usage.promptTokens, completionTokens: usage.completionTokens });
    out.push({ type: 'finish', reason: this.finishReason ?? 'stop' });
  }
}

class OpenAIProvider extends HttpChatProvider {
  readonly provider: string;
  protected readonly endpoint: HttpEndpoint;
  private readonly path: string;
  private readonly includeUsage: boolean;
  private readonly maxTokensField: 'max_completion_tokens' | 'max_tokens';
  private readonly tokenizer: TokenizerName;

  constructor(options: OpenAIProviderOptions) {
    super();
    this.provider = options.provider ?? 'openai';
    const headers: Record<string, string> = { ...options.headers };
    if (options.apiKey) headers.authorization = `Bearer ${options.apiKey}`;
    this.endpoint = new HttpEndpoint({
      provider: this.provider,
      baseUrl: options.baseUrl ?? OPENAI_DEFAULT_BASE_URL,
      headers,
      ...(options.guard ? { guard: options.guard } : {}),
    });
    this.path = `${this.endpoint.basePath}/chat/completions`;
    this.includeUsage = options.includeUsage ?? true;
    this.maxTokensField =
      options.maxTokensField ?? (this.provider === 'openai' ? 'max_completion_tokens' : 'max_tokens');
    this.tokenizer = options.tokenizer ?? 'o200k_base';
  }

  stream(request: ChatRequest, options?: CallOptions): AsyncIterable<StreamEvent> {
    const body: Record<string, unknown> = {
      model: request.model,
      messages: toWire(request.messages),
      stream: true,
    };
    if (this.includeUsage) body.stream_options = { include_usage: true };
    if (request.maxTokens !== undefined) body[this.maxTokensField] = request.maxTokens;
    if (request.temperature !== undefined) body.temperature = request.temperature;
    if (request.topP !== undefined) body.top_p = request.topP;
    if (request.stop !== undefined && request.stop.length > 0) body.stop = request.stop;
    return streamOverHttp(
      this.endpoint,
      this.path,
      JSON.stringify(body),
      request,
      options,
      new OpenAIDecoder(this.provider, request, this.tokenizer),
    );
  }

  /** `GET {base}/models`: `{data: [{id}]}`. */
  async listModels(timeoutMs: number): Promise<string[]> {
    const body = (await this.endpoint.getJson(`${this.endpoint.basePath}/models`, timeoutMs)) as { data?: unknown };
    return modelNames(Array.isArray(body.data) ? body.data.map((m) => (m as { id?: unknown } | null)?.id) : undefined, this.provider);
  }
}

/** OpenAI Chat Completions (`stream: true`, `stream_options.include_usage`). */
export function createOpenAIProvider(options: OpenAIProviderOptions = {}): ChatProvider {
  return new OpenAIProvider(options);
}

/** Any server speaking OpenAI Chat Completions at `baseUrl`; usage is counted locally when it sends none. */
export function createOpenAICompatibleProvider(
  options: OpenAIProviderOptions & { provider: string; baseUrl: string },
): ChatProvider {
  return new OpenAIProvider(options);
}
