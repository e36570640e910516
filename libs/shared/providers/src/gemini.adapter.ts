// Google Gemini `streamGenerateContent?alt=sse`: CRLF-framed SSE, no terminator (a body that ends
// without a finishReason was cut), cumulative usageMetadata on every chunk.
import { HttpChatProvider } from './completion.js';
import { HttpEndpoint, streamOverHttp, type WireDecoder } from './http-transport.js';
import { SseParser } from './sse-parser.js';
import { completeUsage } from './token-counter.js';
import {
  ProviderError,
  type CallOptions,
  type ChatMessage,
  type ChatProvider,
  type ChatRequest,
  type FinishReason,
  type ProviderErrorKind,
  type StreamEvent,
} from './types.js';

export const GEMINI_DEFAULT_BASE_URL = 'https://generativelanguage.googleapis.com';

export interface GeminiProviderOptions {
  provider?: string;
  /** Without the API version, as `GEMINI_BASE_URL`. */
  baseUrl?: string;
  apiKey?: string;
  /** Default v1beta. */
  apiVersion?: string;
  headers?: Record<string, string>;
  guard?: { allowlist: readonly string[] };
}

type Part = { text: string } | { inlineData: { mimeType: string; data: string } };

function toWire(messages: readonly ChatMessage[]): {
  systemInstruction: { parts: Array<{ text: string }> } | undefined;
  contents: Array<{ role: 'user' | 'model'; parts: Part[] }>;
} {
  const system: Array<{ text: string }> = [];
  const contents: Array<{ role: 'user' | 'model'; parts: Part[] }> = [];
  for (const m of messages) {
    if (m.role === 'system') {
      if (typeof m.content === 'string') system.push({ text: m.content });
      else for (const p of m.content) if (p.type === 'text') system.push({ text: p.text });
      continue;
    }
    const parts: Part[] =
      typeof m.content === 'string'
        ? [{ text: m.content }]
        : m.content.map((p) =>
            p.type === 'text' ? { text: p.text } : { inlineData: { mimeType: p.mediaType, data: p.data } },
          );
    contents.push({ role: m.role === 'assistant' ? 'model' : 'user', parts });
  }
  return { systemInstruction: system.length > 0 ? { parts: system } : undefined, contents };
}

const FINISH: Record<string, FinishReason> = {
  STOP: 'stop',
  MAX_TOKENS: 'length',
  SAFETY: 'content_filter',
  RECITATION: 'content_filter',
  BLOCKLIST: 'content_filter',
  PROHIBITED_CONTENT: 'content_filter',
  SPII: 'content_filter',
  IMAGE_SAFETY: 'content_filter',
};

const STATUS_KIND: Record<string, ProviderErrorKind> = {
  RESOURCE_EXHAUSTED: 'rate_limited',
  UNAVAILABLE: 'server',
  INTERNAL: 'server',
  DEADLINE_EXCEEDED: 'timeout',
  INVALID_ARGUMENT: 'bad_request',
  FAILED_PRECONDITION: 'bad_request',
  PERMISSION_DENIED: 'auth',
  UNAUTHENTICATED: 'auth',
  NOT_FOUND: 'not_found',
};

interface ChunkShape {
  error?: { code?: unknown; message?: unknown; status?: unknown };
  candidates?: Array<{
    content?: { parts?: Array<{ text?: unknown; thought?: unknown }> };
    finishReason?: unknown;
  }>;
  promptFeedback?: { blockReason?: unknown };
  usageMetadata?: {
    promptTokenCount?: unknown;
    candidatesTokenCount?: unknown;
    thoughtsTokenCount?: unknown;
  };
}

class GeminiDecoder implements WireDecoder {
  private readonly sse = new SseParser();
  private finishReason: FinishReason | undefined;
  private promptTokens: number | undefined;
  private completionTokens: number | undefined;
  private text = '';

  constructor(
    private readonly provider: string,
    private readonly request: ChatRequest,
  ) {}

  push(chunk: string, out: StreamEvent[]): void {
    for (const ev of this.sse.push(chunk)) this.data(ev.data, out);
  }

  private data(data: string, out: StreamEvent[]): void {
    const obj = JSON.parse(data) as ChunkShape;
    if (obj.error) {
      const status = typeof obj.error.status === 'string' ? obj.error.status : '';
      throw new ProviderError({
        kind: STATUS_KIND[status] ?? 'server',
        provider: this.provider,
        ...(typeof obj.error.code === 'number' ? { status: obj.error.code } : {}),
        message: `${this.provider} stream error: ${status} ${String(obj.error.message ?? '')}`.trim(),
        beforeFirstToken: true,
      });
    }
    const cand = obj.candidates?.[0];
    if (cand) {
      for (const part of cand.content?.parts ?? []) {
        // Thought summaries are not part of the reply.
        if (part.thought === true) continue;
        if (typeof part.text === 'string' && part.text.length > 0) {
          this.text += part.text;
          out.push({ type: 'delta', text: part.text });
        }
      }
      if (typeof cand.finishReason === 'string' && cand.finishReason !== 'FINISH_REASON_UNSPECIFIED')
        this.finishReason = FINISH[cand.finishReason] ?? 'error';
    }
    if (obj.promptFeedback?.blockReason !== undefined) this.finishReason = 'content_filter';
    const u = obj.usageMetadata;
    if (u) {
      if (typeof u.promptTokenCount === 'number') this.promptTokens = u.promptTokenCount;
      // Thinking tokens are billed as output.
      if (typeof u.candidatesTokenCount === 'number' || typeof u.thoughtsTokenCount === 'number')
        this.completionTokens = num(u.candidatesTokenCount) + num(u.thoughtsTokenCount);
    }
  }

  async finish(out: StreamEvent[]): Promise<void> {
    for (const ev of this.sse.end()) this.data(ev.data, out);
    if (this.finishReason === undefined)
      throw new ProviderError({
        kind: 'stream_cut',
        provider: this.provider,
        message: `${this.provider} stream ended without a finishReason`,
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

function num(v: unknown): number {
  return typeof v === 'number' ? v : 0;
}

class GeminiProvider extends HttpChatProvider {
  readonly provider: string;
  protected readonly endpoint: HttpEndpoint;
  private readonly prefix: string;

  constructor(options: GeminiProviderOptions) {
    super();
    this.provider = options.provider ?? 'gemini';
    const headers: Record<string, string> = { ...options.headers };
    // In a header rather than `?key=`, so the key never lands in access logs.
    if (options.apiKey) headers['x-goog-api-key'] = options.apiKey;
    this.endpoint = new HttpEndpoint({
      provider: this.provider,
      baseUrl: options.baseUrl ?? GEMINI_DEFAULT_BASE_URL,
      headers,
      ...(options.guard ? { guard: options.guard } : {}),
    });
    this.prefix = `${this.endpoint.basePath}/${options.apiVersion ?? 'v1beta'}/models/`;
  }

  stream(request: ChatRequest, options?: CallOptions): AsyncIterable<StreamEvent> {
    const wire = toWire(request.messages);
    const body: Record<string, unknown> = { contents: wire.contents };
    if (wire.systemInstruction) body.systemInstruction = wire.systemInstruction;
    const config: Record<string, unknown> = {};
    if (request.maxTokens !== undefined) config.maxOutputTokens = request.maxTokens;
    if (request.temperature !== undefined) config.temperature = request.temperature;
    if (request.topP !== undefined) config.topP = request.topP;
    if (request.stop !== undefined && request.stop.length > 0) config.stopSequences = request.stop;
    if (Object.keys(config).length > 0) body.generationConfig = config;
    const model = request.model.startsWith('models/') ? request.model.slice(7) : request.model;
    const path = `${this.prefix}${encodeURIComponent(model)}:streamGenerateContent?alt=sse`;
    return streamOverHttp(
      this.endpoint,
      path,
      JSON.stringify(body),
      request,
      options,
      new GeminiDecoder(this.provider, request),
    );
  }
}

/** Google Gemini (`x-goog-api-key`, roles user/model, system prompt in `systemInstruction`). */
export function createGeminiProvider(options: GeminiProviderOptions = {}): ChatProvider {
  return new GeminiProvider(options);
}
