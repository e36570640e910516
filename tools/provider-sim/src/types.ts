import type { IncomingHttpHeaders } from 'node:http';

/** HTTP statuses the `status5xx` switch may inject. 529 is Anthropic's "overloaded". */
export type ServerErrorStatus = 500 | 502 | 503 | 504 | 529;

/**
 * Fault and pacing switches. Every field is optional; an unset field falls through to the
 * next less specific layer (request headers > model scope > global > built-in defaults).
 */
export interface Faults {
  /** Delay before the first byte of the response (headers included), in ms. */
  latencyMs?: number;
  /** Pace of token chunks. 0 (the default) writes the whole reply at once. */
  tokensPerSecond?: number;
  /** Answer 429 in the vendor's shape, with Retry-After and the vendor's rate-limit headers. */
  status429?: boolean;
  /** Seconds announced in Retry-After (and the vendor's own retry hints). Default 1. */
  retryAfter?: number;
  /** Answer with this 5xx status in the vendor's error shape (0 switches a less specific layer's 5xx off). */
  status5xx?: ServerErrorStatus | 0;
  /**
   * Only the first N requests that reach this fault fail; later ones succeed. Applies to every
   * failure switch (429, 5xx, stall, cut, in-stream error), not to latency or pacing.
   */
  failTimes?: number;
  /** Send the preamble and N token chunks, then go silent with the connection kept open. */
  stallAfterChunks?: number;
  /** Send the preamble and N token chunks, then destroy the socket (no terminating chunk). */
  cutAfterChunks?: number;
  /** Send the preamble and N token chunks, then the vendor's in-stream error event, then end. */
  errorAfterChunks?: number;
  /** Cap on generated tokens, on top of the request's own max_tokens; hitting it ends with "length". */
  maxTokens?: number;
  /** Exact reply length in tokens (instead of the seeded 24–64). */
  replyTokens?: number;
}

export interface ProviderSimOptions {
  /** 0 (default) picks an ephemeral port. */
  port?: number;
  /** Defaults to 127.0.0.1. */
  host?: string;
  /** How many requests GET /_sim/requests keeps (ring buffer). Default 200. */
  logSize?: number;
  /** Reject requests without an API key in the vendor's way (Ollama never asks). Default true. */
  requireAuth?: boolean;
  /** Global faults set at start, as if POSTed to /_sim/faults without a model. */
  faults?: Faults;
  /** Model names the list endpoints report (chat routes accept any name). */
  models?: readonly string[];
}

export type Protocol = 'openai' | 'anthropic' | 'gemini' | 'ollama' | 'sim';

/** An image the simulator found in a request, in whatever form the protocol carries it. */
export interface ImageRecord {
  protocol: Protocol;
  /** Where in the request it was: e.g. `messages[0].content[1]`. */
  path: string;
  /** 'base64' for inline data (data: URLs included), 'url' for a remote reference. */
  source: 'base64' | 'url';
  /** The media type the client declared (data: URL prefix, media_type, mimeType); '' if none. */
  declaredType: string;
  /** The type recognised from the first bytes (png, jpeg, gif, webp), or 'unknown'. */
  detectedType: 'image/png' | 'image/jpeg' | 'image/gif' | 'image/webp' | 'unknown';
  /** Decoded size in bytes (0 for URLs). */
  bytes: number;
  /** False when inline data is not valid base64. */
  validBase64: boolean;
  /** The URL for source 'url'. */
  url?: string;
}

export type RequestOutcome = 'pending' | 'ok' | 'error' | 'aborted' | 'stalled' | 'cut' | 'stream-error';

export interface RequestRecord {
  id: number;
  /** Epoch ms when the request head arrived. */
  startedAt: number;
  /** Epoch ms when the response ended, was cut, or the client went away. */
  endedAt?: number;
  /** Epoch ms when the client closed the connection before the response ended. */
  abortedAt?: number;
  method: string;
  path: string;
  route: string;
  protocol: Protocol;
  model?: string;
  stream: boolean;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body (undefined when absent or not JSON). */
  body: unknown;
  images: ImageRecord[];
  status?: number;
  outcome: RequestOutcome;
  /** Token chunks written (preamble and closing events not counted). */
  chunksSent: number;
  /** The fault that decided the outcome, if any: '429', '5xx', 'stall', 'cut', 'stream-error'. */
  fault?: string;
}

export interface AbortRecord {
  requestId: number;
  route: string;
  model?: string;
  startedAt: number;
  abortedAt: number;
  /** What the simulator was doing when the client left. */
  phase: 'latency' | 'generating' | 'streaming' | 'stalled';
  chunksSent: number;
}

export interface SimStats {
  /** Epoch ms of the last reset. */
  since: number;
  requests: number;
  inFlight: number;
  byRoute: Record<string, number>;
  byModel: Record<string, number>;
  byStatus: Record<string, number>;
  completed: number;
  aborted: number;
  stalled: number;
  cut: number;
  injected: { status429: number; status5xx: number; streamError: number };
  imagesReceived: number;
  /** The last 100 client aborts, oldest first. */
  aborts: AbortRecord[];
}

export interface ProviderSim {
  /** Base URL without a trailing slash, e.g. http://127.0.0.1:40123 */
  url: string;
  port: number;
  /** Replace the faults of one scope: a model name, or global when omitted. Resets its failTimes count. */
  setFaults(faults: Faults, scope?: string): void;
  /** Remove all faults, global and per model. */
  resetFaults(): void;
  stats(): SimStats;
  /** Zero the counters, the abort list and the request log. */
  resetStats(): void;
  /** The request log, oldest first. */
  requests(): RequestRecord[];
  close(): Promise<void>;
}
