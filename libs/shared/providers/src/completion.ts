import type { Completion, FinishReason, StreamEvent, Usage } from './types.js';

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
