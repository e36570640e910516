import { isProviderError, type ChatMessage, type ProviderRouter, type Usage } from '@vivier/providers';
import { cutText, type ErrorInfo } from '@vivier/contracts';

export interface ProviderCallResult {
  content: string;
  usage: Usage;
  provider: string;
  /** `<provider>/<model>` after alias resolution. */
  model: string;
  latencyMs: number;
  timeToFirstTokenMs?: number;
  finishReason: string;
}

/** A failed call, with whatever arrived before it failed (the reply so far, the route taken). */
export class ProviderCallFailure extends Error {
  constructor(
    readonly error: ErrorInfo,
    readonly retryable: boolean,
    readonly partial: ProviderCallResult,
    cause: unknown,
    /**
     * No provider here serves the model id (the router's own not_found, not a vendor's 404). A
     * provider configured through the admin API a moment ago can be known to chat, which queued
     * the job, before this instance has applied it.
     */
    readonly unknownHere = false,
  ) {
    super(`${error.code}: ${error.detail}`, { cause });
    this.name = 'ProviderCallFailure';
  }
}

const ERROR_CODES: Record<string, string> = {
  rate_limited: 'provider_rate_limited',
  server: 'provider_unavailable',
  connection: 'provider_unavailable',
  stream_cut: 'provider_unavailable',
  timeout: 'provider_timeout',
  auth: 'provider_auth_failed',
  bad_request: 'provider_bad_request',
  not_found: 'model_not_found',
  cancelled: 'cancelled',
};

/** A call's result before anything arrived: the provider named by the model id (when it is a valid id), no text, no usage. */
export function emptyResult(modelId: string, finishReason = 'stop'): ProviderCallResult {
  const [provider] = modelId.split('/', 1);
  return {
    content: '',
    usage: { promptTokens: 0, completionTokens: 0 },
    provider: provider && /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(provider) ? provider : 'unknown',
    model: modelId,
    latencyMs: 0,
    finishReason,
  };
}

/**
 * One routed call (the router retries, backs off and falls back inside it), streamed so that a
 * failure still reports the partial reply, the provider tried and the time to first token.
 */
export async function callProvider(
  router: ProviderRouter,
  modelId: string,
  messages: ChatMessage[],
  options: { maxTokens?: number; signal?: AbortSignal; timeoutMs?: number } = {},
): Promise<ProviderCallResult> {
  const started = performance.now();
  const result = emptyResult(modelId);
  try {
    const request = {
      messages,
      ...(options.maxTokens === undefined ? {} : { maxTokens: options.maxTokens }),
      ...(options.signal ? { signal: options.signal } : {}),
    };
    for await (const ev of router.stream(modelId, request, options.timeoutMs === undefined ? undefined : { timeoutMs: options.timeoutMs })) {
      if (ev.type === 'route') {
        result.provider = ev.provider;
        result.model = `${ev.provider}/${ev.model}`;
      } else if (ev.type === 'delta') {
        result.timeToFirstTokenMs ??= Math.round(performance.now() - started);
        result.content += ev.text;
      } else if (ev.type === 'usage') {
        result.usage = { promptTokens: ev.promptTokens, completionTokens: ev.completionTokens };
      } else if (ev.type === 'finish') {
        result.finishReason = ev.reason;
      }
    }
    result.latencyMs = Math.round(performance.now() - started);
    return result;
  } catch (error) {
    result.latencyMs = Math.round(performance.now() - started);
    if (isProviderError(error)) {
      if (error.provider && result.provider === 'unknown') result.provider = error.provider;
      const code = ERROR_CODES[error.kind] ?? 'provider_error';
      // Not worth retrying later: the model or the request is wrong, or the key is; or the reply was cancelled.
      const retryable = !['auth', 'bad_request', 'not_found', 'cancelled'].includes(error.kind);
      const unknownHere = error.kind === 'not_found' && error.provider === 'router';
      // The detail reaches the user (on the reply); the vendor's own text stays in the logs.
      throw new ProviderCallFailure({ code, detail: cutText(error.publicMessage, 2000) }, retryable, result, error, unknownHere);
    }
    const detail = error instanceof Error ? error.message : String(error);
    throw new ProviderCallFailure({ code: 'provider_error', detail: cutText(detail, 2000) }, true, result, error);
  }
}
