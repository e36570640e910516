import { signInternalCall } from '@vivier/service-kit';
import { assertChatAnswered } from '../chat-internal';

/** What chat gives the worker to write a chat's next summary (`GET /internal/v1/chats/:id/summary-source`). */
export interface SummarySource {
  summary: { text: string; throughMessageId: string; throughCreatedAt: string } | null;
  /** Oldest first; none when there is nothing to fold. */
  messages: Array<{ id: string; role: 'user' | 'assistant'; content: string; createdAt: string }>;
}

function isSource(value: unknown): value is SummarySource {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Partial<SummarySource>;
  return Array.isArray(v.messages) && (v.summary === null || (typeof v.summary === 'object' && typeof v.summary?.text === 'string'));
}

/**
 * The worker may not read chat's tables: it asks chat, over the internal network (a signed
 * internal call), which of a chat's messages to fold into its summary, after the newest summary
 * it knows of (`after`: one the worker wrote that chat may not have stored yet).
 */
export async function fetchSummarySource(
  chatUrl: string,
  secret: string,
  input: { chatId: string; userId: string; historyBudget: number; budget: number; after?: { id: string; createdAt: Date }; signal?: AbortSignal },
): Promise<SummarySource> {
  const url = new URL(`/internal/v1/chats/${encodeURIComponent(input.chatId)}/summary-source`, chatUrl);
  url.searchParams.set('userId', input.userId);
  url.searchParams.set('historyBudget', String(input.historyBudget));
  url.searchParams.set('budget', String(input.budget));
  if (input.after) {
    url.searchParams.set('afterId', input.after.id);
    url.searchParams.set('afterAt', input.after.createdAt.toISOString());
  }
  const response = await fetch(url, {
    headers: { accept: 'application/json', ...signInternalCall(secret) },
    ...(input.signal ? { signal: input.signal } : {}),
  });
  await assertChatAnswered(response, 'the summary source');
  const text = await response.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error("chat's summary source answered with a body that is not JSON");
  }
  if (!isSource(body)) throw new Error("chat's summary source answered without `summary` and `messages`");
  return body;
}
