// Ollama `/api/chat`: NDJSON, one object per token, a final `done: true` object with the counts.
import { HttpChatProvider } from './completion.js';
import { HttpEndpoint, modelNames, streamOverHttp, type WireDecoder } from './http-transport.js';
import { NdjsonParser } from './ndjson-parser.js';
import { completeUsage } from './token-counter.js';
import {
  ProviderError,
  type CallOptions,
  type ChatMessage,
  type ChatProvider,
  type ChatRequest,
  type FinishReason,
  type StreamEvent,
} from './types.js';

export const OLLAMA_DEFAULT_HOST = 'http://127.0.0.1:11434';

/**
 * `OLLAMA_HOST` as the Ollama CLI reads it: a scheme is optional (http), so is the port (11434),
 * and `0.0.0.0` (what a server listens on) means this machine.
 */
export function ollamaBaseUrl(host: string | undefined): string {
  if (!host || host.trim() === '') return OLLAMA_DEFAULT_HOST;
  let value = host.trim();
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) value = `http://${value}`;
  const url = new URL(value);
  const authority = value.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').split('/')[0] ?? '';
  // https without a port means 443, as in the CLI; plain http defaults to Ollama's port.
  if (!/:\d+$/.test(authority) && url.protocol === 'http:') url.port = '11434';
  if (url.hostname === '0.0.0.0') url.hostname = '127.0.0.1';
  return url.toString().replace(/\/+$/, '');
}

export interface OllamaProviderOptions {
  provider?: string;
  /** Base URL (see {@link ollamaBaseUrl} for `OLLAMA_HOST` forms). */
  baseUrl?: string;
  /** For an Ollama behind an authenticating proxy. */
  apiKey?: string;
  /**
   * Ollama silently truncates prompts to its context size (a few thousand tokens by default);
   * set it to the window the router budgets for (`options.num_ctx`).
   */
  numCtx?: number;
  headers?: Record<string, string>;
  guard?: { allowlist: readonly string[] };
}

function toWire(
  messages: readonly ChatMessage[],
): Array<{ role: string; content: string; images?: string[] }> {
  return messages.map((m) => {
    if (typeof m.content === 'string') return { role: m.role, content: m.content };
    const text: string[] = [];
    const images: string[] = [];
    for (const p of m.content) {
      if (p.type === 'text') text.push(p.text);
      else images.push(p.data);
    }
    return images.length > 0
      ? { role: m.role, content: text.join('\n'), images }
      : { role: m.role, content: text.join('\n') };
  });
}

interface LineShape {
  error?: unknown;
  message?: { content?: unknown };
  done?: unknown;
  done_reason?: unknown;
  prompt_eval_count?: unknown;
  eval_count?: unknown;
}

class OllamaDecoder implements WireDecoder {
  private readonly ndjson = new NdjsonParser();
  private done = false;
  private finishReason: FinishReason = 'stop';
  private promptTokens: number | undefined;
  private completionTokens: number | undefined;
  private text = '';

  constructor(
    private readonly provider: string,
    private readonly request: ChatRequest,
  ) {}

  push(chunk: string, out: StreamEvent[]): void {
    for (const line of this.ndjson.push(chunk)) this.line(line as LineShape, out);
  }

  private line(obj: LineShape, out: StreamEvent[]): void {
    if (this.done) return;
    if (obj.error !== undefined)
      throw new ProviderError({
        kind: 'server',
        provider: this.provider,
        message: `${this.provider} stream error: ${String(obj.error)}`,
        beforeFirstToken: true,
      });
    const content = obj.message?.content;
    if (typeof content === 'string' && content.length > 0) {
      this.text += content;
      out.push({ type: 'delta', text: content });
    }
    if (obj.done === true) {
      this.done = true;
      if (obj.done_reason === 'length') this.finishReason = 'length';
      // Ollama leaves prompt_eval_count out when the whole prompt came from its cache.
      if (typeof obj.prompt_eval_count === 'number') this.promptTokens = obj.prompt_eval_count;
      if (typeof obj.eval_count === 'number') this.completionTokens = obj.eval_count;
    }
  }

  async finish(out: StreamEvent[]): Promise<void> {
    for (const line of this.ndjson.end()) this.line(line as LineShape, out);
    if (!this.done)
      throw new ProviderError({
        kind: 'stream_cut',
        provider: this.provider,
        message: `${this.provider} stream ended before done`,
        beforeFirstToken: true,
      });
    const usage = await completeUsage(this.request, this.text, {
      ...(this.promptTokens === undefined ? {} : { promptTokens: this.promptTokens }),
      ...(this.completionTokens === undefined ? {} : { completionTokens: this.completionTokens }),
    });
    out.push({ type: 'usage', promptTokens: usage.promptTokens, completionTokens: usage.completionTokens });
    out.push({ type: 'finish', reason: this.finishReason });
  }
}

class OllamaProvider extends HttpChatProvider {
  readonly provider: string;
  protected readonly endpoint: HttpEndpoint;
  private readonly path: string;
  private readonly numCtx: number | undefined;

  constructor(options: OllamaProviderOptions) {
    super();
    this.provider = options.provider ?? 'ollama';
    const headers: Record<string, string> = { ...options.headers };
    if (options.apiKey) headers.authorization = `Bearer ${options.apiKey}`;
    this.endpoint = new HttpEndpoint({
      provider: this.provider,
      baseUrl: options.baseUrl ?? OLLAMA_DEFAULT_HOST,
      headers,
      ...(options.guard ? { guard: options.guard } : {}),
    });
    this.path = `${this.endpoint.basePath}/api/chat`;
    this.numCtx = options.numCtx;
  }

  stream(request: ChatRequest, options?: CallOptions): AsyncIterable<StreamEvent> {
    const body: Record<string, unknown> = {
      model: request.model,
      messages: toWire(request.messages),
      stream: true,
    };
    const opts: Record<string, unknown> = {};
    if (request.maxTokens !== undefined) opts.num_predict = request.maxTokens;
    if (request.temperature !== undefined) opts.temperature = request.temperature;
    if (request.topP !== undefined) opts.top_p = request.topP;
    if (request.stop !== undefined && request.stop.length > 0) opts.stop = request.stop;
    if (this.numCtx !== undefined) opts.num_ctx = this.numCtx;
    if (Object.keys(opts).length > 0) body.options = opts;
    return streamOverHttp(
      this.endpoint,
      this.path,
      JSON.stringify(body),
      request,
      options,
      new OllamaDecoder(this.provider, request),
    );
  }

  /** `GET /api/tags`: `{models: [{name}]}` (the models pulled on the server). */
  async listModels(timeoutMs: number): Promise<string[]> {
    const body = (await this.endpoint.getJson(`${this.endpoint.basePath}/api/tags`, timeoutMs)) as { models?: unknown };
    return modelNames(Array.isArray(body.models) ? body.models.map((m) => (m as { name?: unknown } | null)?.name) : undefined, this.provider);
  }
}

/** Ollama `/api/chat` (NDJSON; images as `messages[].images`). */
export function createOllamaProvider(options: OllamaProviderOptions = {}): ChatProvider {
  return new OllamaProvider(options);
}
