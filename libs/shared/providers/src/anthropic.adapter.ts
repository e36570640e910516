// Anthropic Messages API over SSE: dispatch on the event name, input tokens from message_start,
// the cumulative output count from message_delta, message_stop as the end marker.
import { HttpChatProvider } from './completion.js';
import { HttpEndpoint, streamOverHttp, type WireDecoder } from './http-transport.js';
import { SseParser } from './sse-parser.js';
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

export const ANTHROPIC_DEFAULT_BASE_URL = 'https://api.anthropic.com';
export const ANTHROPIC_DEFAULT_VERSION = '2023-06-01';
/** Anthropic requires `max_tokens`; every current model accepts this many. */
export const ANTHROPIC_DEFAULT_MAX_TOKENS = 4096;

export interface AnthropicProviderOptions {
  provider?: string;
  /** Without `/v1`, as the official SDK's `ANTHROPIC_BASE_URL`. */
  baseUrl?: string;
  apiKey?: string;
  /** The `anthropic-version` header. Default 2023-06-01. */
  version?: string;
  /** Sent when the request sets no `maxTokens`. */
  defaultMaxTokens?: number;
  headers?: Record<string, string>;
  guard?: { allowlist: readonly string[] };
}

type Block =
  | { type: 'text'; text: string }
  | { type: 'image'; source: { type: 'base64'; media_type: string; data: string } };

function toWire(messages: readonly ChatMessage[]): {
  system: string | undefined;
  messages: Array<{ role: string; content: string | Block[] }>;
} {
  const system: string[] = [];
  const out: Array<{ role: string; content: string | Block[] }> = [];
  for (const m of messages) {
    if (m.role === 'system') {
      // Anthropic takes the system prompt beside the messages, not among them.
      if (typeof m.content === 'string') system.push(m.content);
      else for (const p of m.content) if (p.type === 'text') system.push(p.text);
      continue;
    }
    out.push({
      role: m.role,
      content:
        typeof m.content === 'string'
          ? m.content
          : m.content.map((p) =>
              p.type === 'text'
                ? { type: 'text' as const, text: p.text }
                : {
                    type: 'image' as const,
                    source: { type: 'base64' as const, media_type: p.mediaType, data: p.data },
                  },
            ),
    });
  }
  return { system: system.length > 0 ? system.join('\n\n') : undefined, messages: out };
}

const FINISH: Record<string, FinishReason> = {
  end_turn: 'stop',
  stop_sequence: 'stop',
  tool_use: 'stop',
  pause_turn: 'stop',
  max_tokens: 'length',
  model_context_window_exceeded: 'length',
  refusal: 'content_filter',
};

const ERROR_KIND: Record<string, ProviderErrorKind> = {
  overloaded_error: 'server',
  api_error: 'server',
  rate_limit_error: 'rate_limited',
  timeout_error: 'timeout',
  invalid_request_error: 'bad_request',
  request_too_large: 'bad_request',
  authentication_error: 'auth',
  permission_error: 'auth',
  not_found_error: 'not_found',
};

interface EventShape {
  message?: { usage?: Record<string, unknown> };
  delta?: { type?: unknown; text?: unknown; stop_reason?: unknown };
  usage?: Record<string, unknown>;
  error?: { type?: unknown; message?: unknown };
}

function num(v: unknown): number {
  return typeof v === 'number' ? v : 0;
}

class AnthropicDecoder implements WireDecoder {
  private readonly sse = new SseParser();
  private done = false;
  private finishReason: FinishReason | undefined;
  private promptTokens = 0;
  private completionTokens = 0;

  constructor(private readonly provider: string) {}

  push(chunk: string, out: StreamEvent[]): void {
    for (const ev of this.sse.push(chunk)) this.event(ev.event, ev.data, out);
  }

  private event(name: string, data: string, out: StreamEvent[]): void {
    if (this.done || name === 'ping') return;
    const obj = JSON.parse(data) as EventShape;
    switch (name) {
      case 'message_start': {
        const u = obj.message?.usage ?? {};
        // Cached prompt tokens are reported apart from input_tokens; all of them are prompt.
        this.promptTokens =
          num(u.input_tokens) + num(u.cache_creation_input_tokens) + num(u.cache_read_input_tokens);
        this.completionTokens = num(u.output_tokens);
        break;
      }
      case 'content_block_delta':
        if (
          obj.delta?.type === 'text_delta' &&
          typeof obj.delta.text === 'string' &&
          obj.delta.text.length > 0
        )
          out.push({ type: 'delta', text: obj.delta.text });
        break;
      case 'message_delta': {
        if (typeof obj.delta?.stop_reason === 'string')
          this.finishReason = FINISH[obj.delta.stop_reason] ?? 'stop';
        const u = obj.usage;
        if (u) {
          if (typeof u.output_tokens === 'number') this.completionTokens = u.output_tokens;
          if (typeof u.input_tokens === 'number')
            this.promptTokens =
              u.input_tokens + num(u.cache_creation_input_tokens) + num(u.cache_read_input_tokens);
        }
        break;
      }
      case 'message_stop':
        this.done = true;
        break;
      case 'error': {
        const type = String(obj.error?.type ?? 'api_error');
        throw new ProviderError({
          kind: ERROR_KIND[type] ?? 'server',
          provider: this.provider,
          ...(type === 'overloaded_error' ? { status: 529 } : {}),
          message: `${this.provider} stream error: ${type}: ${String(obj.error?.message ?? '')}`,
          beforeFirstToken: true,
        });
      }
      default:
        break;
    }
  }

  finish(out: StreamEvent[]): void {
    for (const ev of this.sse.end()) this.event(ev.event, ev.data, out);
    if (!this.done && this.finishReason === undefined)
      throw new ProviderError({
        kind: 'stream_cut',
        provider: this.provider,
        message: `${this.provider} stream ended without message_stop`,
        beforeFirstToken: true,
      });
    out.push({ type: 'usage', promptTokens: this.promptTokens, completionTokens: this.completionTokens });
    out.push({ type: 'finish', reason: this.finishReason ?? 'stop' });
  }
}

class AnthropicProvider extends HttpChatProvider {
  readonly provider: string;
  protected readonly endpoint: HttpEndpoint;
  private readonly path: string;
  private readonly defaultMaxTokens: number;

  constructor(options: AnthropicProviderOptions) {
    super();
    this.provider = options.provider ?? 'anthropic';
    const headers: Record<string, string> = {
      'anthropic-version': options.version ?? ANTHROPIC_DEFAULT_VERSION,
      ...options.headers,
    };
    if (options.apiKey) headers['x-api-key'] = options.apiKey;
    this.endpoint = new HttpEndpoint({
      provider: this.provider,
      baseUrl: options.baseUrl ?? ANTHROPIC_DEFAULT_BASE_URL,
      headers,
      ...(options.guard ? { guard: options.guard } : {}),
    });
    this.path = `${this.endpoint.basePath}/v1/messages`;
    this.defaultMaxTokens = options.defaultMaxTokens ?? ANTHROPIC_DEFAULT_MAX_TOKENS;
  }

  stream(request: ChatRequest, options?: CallOptions): AsyncIterable<StreamEvent> {
    const wire = toWire(request.messages);
    const body: Record<string, unknown> = {
      model: request.model,
      max_tokens: request.maxTokens ?? this.defaultMaxTokens,
      messages: wire.messages,
      stream: true,
    };
    if (wire.system !== undefined) body.system = wire.system;
    if (request.temperature !== undefined) body.temperature = request.temperature;
    if (request.topP !== undefined) body.top_p = request.topP;
    if (request.stop !== undefined && request.stop.length > 0) body.stop_sequences = request.stop;
    return streamOverHttp(
      this.endpoint,
      this.path,
      JSON.stringify(body),
      request,
      options,
      new AnthropicDecoder(this.provider),
    );
  }
}

/** Anthropic Messages (`x-api-key`, `anthropic-version`, system prompt in `system`). */
export function createAnthropicProvider(options: AnthropicProviderOptions = {}): ChatProvider {
  return new AnthropicProvider(options);
}
