// The one streaming interface every adapter and the router speak.

export type ChatRole = 'system' | 'user' | 'assistant';

export interface TextPart {
  type: 'text';
  text: string;
}

export interface ImagePart {
  type: 'image';
  /** e.g. `image/png`, `image/jpeg`, `image/webp`, `image/gif`. */
  mediaType: string;
  /** The image bytes, base64 (no `data:` prefix). */
  data: string;
}

export type ContentPart = TextPart | ImagePart;

export interface ChatMessage {
  role: ChatRole;
  content: string | readonly ContentPart[];
}

export interface ChatRequest {
  /** The provider's own model name (`gpt-4o-mini`), not a Vivier model id. */
  model: string;
  messages: readonly ChatMessage[];
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  stop?: readonly string[];
  /**
   * The caller's own count of `messages` with the same tokenizer and OpenAI's per-message
   * accounting (a chat service keeps per-message counts). Used instead of tokenizing the prompt
   * again when the provider reports no usage; a provider's own figure always wins.
   */
  promptTokens?: number;
  /** Aborting it closes the upstream connection at once; the stream then throws `cancelled`. */
  signal?: AbortSignal;
}

export type FinishReason = 'stop' | 'length' | 'content_filter' | 'error' | 'cancelled';

export interface DeltaEvent {
  type: 'delta';
  text: string;
}

export interface UsageEvent {
  type: 'usage';
  promptTokens: number;
  completionTokens: number;
}

export interface FinishEvent {
  type: 'finish';
  reason: FinishReason;
}

/**
 * What a provider stream yields: deltas, then exactly one `usage` and one `finish` when it ends
 * normally. An abnormal end (failure, cancellation) is a thrown {@link ProviderError}, never a
 * silent end, so a `for await` loop cannot mistake a cut reply for a complete one.
 */
export type StreamEvent = DeltaEvent | UsageEvent | FinishEvent;

/** Per-call limits an adapter enforces; the router sets them from the deployment. */
export interface CallOptions {
  /** Whole call, first byte to last. */
  timeoutMs?: number;
  /** Longest silence allowed: before the response head and between body chunks. */
  idleTimeoutMs?: number;
}

/** One configured endpoint speaking one wire protocol. The model comes with each request. */
export interface ChatProvider {
  /** Provider id (`openai`, `anthropic`, a compatible server's name, …), used in errors. */
  readonly provider: string;
  stream(request: ChatRequest, options?: CallOptions): AsyncIterable<StreamEvent>;
  complete(request: ChatRequest, options?: CallOptions): Promise<Completion>;
  /**
   * The model names the server lists (OpenAI-compatible `GET /models`, Ollama `GET /api/tags`),
   * for the servers whose models are not known in advance. Throws ProviderError or Error.
   */
  listModels?(timeoutMs: number): Promise<string[]>;
  /** Closes the keep-alive connections. */
  close(): Promise<void>;
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
}

export interface Completion {
  text: string;
  usage: Usage;
  finishReason: FinishReason;
}

export type ProviderErrorKind =
  | 'rate_limited'
  | 'server'
  | 'timeout'
  | 'connection'
  | 'auth'
  | 'bad_request'
  | 'not_found'
  | 'stream_cut'
  | 'cancelled';

/** Failures that another try (later, or elsewhere) may not repeat. */
const TRANSIENT: ReadonlySet<ProviderErrorKind> = new Set([
  'rate_limited',
  'server',
  'timeout',
  'connection',
  'stream_cut',
]);

export interface ProviderErrorInit {
  kind: ProviderErrorKind;
  provider: string;
  message: string;
  status?: number;
  retryAfterMs?: number;
  /** Defaults from the kind: rate limits, 5xx, timeouts, connection failures and cuts are retryable. */
  retryable?: boolean;
  /** True when no text had been emitted yet, so the request may be retried or sent elsewhere. */
  beforeFirstToken: boolean;
  cause?: unknown;
  /**
   * What a user of the platform may be told. By default a sentence from the kind, the provider's
   * name and the status: the vendor's own text (which can quote part of the platform's key),
   * addresses and connection details stay in `message`, for the logs.
   */
  publicMessage?: string;
}

/** The default `publicMessage` of a failure of `provider` of this kind. */
export function publicMessageOf(kind: ProviderErrorKind, provider: string, status?: number): string {
  const answered = status === undefined ? '' : ` (HTTP ${status})`;
  switch (kind) {
    case 'rate_limited':
      return `${provider} is rate limiting requests; try again later.`;
    case 'server':
      return `${provider} failed to answer${answered}.`;
    case 'timeout':
      return `${provider} did not answer in time.`;
    case 'connection':
      return `${provider} cannot be reached.`;
    case 'auth':
      return `${provider} refused the platform's credentials${answered}; an operator needs to check its API key.`;
    case 'bad_request':
      return `${provider} refused the request${answered}.`;
    case 'not_found':
      return `${provider} does not know the model or its endpoint${answered}.`;
    case 'stream_cut':
      return `${provider} stopped sending the reply before it was complete.`;
    case 'cancelled':
      return 'The request was cancelled.';
  }
}

export class ProviderError extends Error {
  readonly kind: ProviderErrorKind;
  readonly provider: string;
  // `declare`: absent values stay absent instead of becoming own `undefined` properties.
  declare readonly status?: number;
  declare readonly retryAfterMs?: number;
  readonly retryable: boolean;
  readonly beforeFirstToken: boolean;
  readonly publicMessage: string;

  constructor(init: ProviderErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'ProviderError';
    this.kind = init.kind;
    this.provider = init.provider;
    if (init.status !== undefined) this.status = init.status;
    if (init.retryAfterMs !== undefined) this.retryAfterMs = init.retryAfterMs;
    this.retryable = init.retryable ?? TRANSIENT.has(init.kind);
    this.beforeFirstToken = init.beforeFirstToken;
    this.publicMessage = init.publicMessage ?? publicMessageOf(init.kind, init.provider, init.status);
  }

  /** The same error with `beforeFirstToken` (and optionally other fields) replaced. */
  with(changes: Partial<ProviderErrorInit>): ProviderError {
    return new ProviderError({
      kind: this.kind,
      provider: this.provider,
      message: this.message,
      ...(this.status === undefined ? {} : { status: this.status }),
      ...(this.retryAfterMs === undefined ? {} : { retryAfterMs: this.retryAfterMs }),
      retryable: this.retryable,
      beforeFirstToken: this.beforeFirstToken,
      publicMessage: this.publicMessage,
      ...(this.cause === undefined ? {} : { cause: this.cause }),
      ...changes,
    });
  }
}

export function isProviderError(value: unknown): value is ProviderError {
  return value instanceof ProviderError;
}
