import type { CallOptions, ChatProvider, ChatRequest, Completion, FinishReason, StreamEvent, Usage } from './types.js';

/**
 * Drains a stream into one reply: the non-streaming `complete()` of every adapter and of the
 * router. Failures propagate as the stream's ProviderError; other event types (the router's
 * `route`) are ignored here.
 */
export async function collectCompletion(
  events: AsyncIterable<StreamEvent | { type: string }>,
): Promise<Completion> {
  let text = '';
  let usage: Usage = { promptTokens: 0, completionTokens: 0 };
  let finishReason: FinishReason = 'stop';
  for await (const ev of events as AsyncIterable<StreamEvent>) {
    if (ev.type === 'delta') text += ev.text;
    else if (ev.type === 'usage')
      usage = { promptTokens: ev.promptTokens, completionTokens: ev.completionTokens };
    else if (ev.type === 'finish') finishReason = ev.reason;
  }
  return { text, usage, finishReason };
}

/**
 * What every HTTP adapter shares: `complete` is the stream collected, `close` releases the
 * endpoint's keep-alive connections. An adapter supplies its wire protocol as `stream`.
 */
export abstract class HttpChatProvider implements ChatProvider {
  abstract readonly provider: string;
  protected abstract readonly endpoint: { close(): Promise<void> };

  abstract stream(request: ChatRequest, options?: CallOptions): AsyncIterable<StreamEvent>;

  complete(request: ChatRequest, options?: CallOptions): Promise<Completion> {
    return collectCompletion(this.stream(request, options));
  }

  close(): Promise<void> {
    return this.endpoint.close();
  }
}
