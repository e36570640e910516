/** Chat refused an internal call in a way no retry changes (a 4xx other than 408 and 429: the user or chat is gone, a bad request). */
export class ChatRefused extends Error {
  constructor(readonly status: number, what: string, detail: string) {
    super(`chat refused ${what} (${status}): ${detail.slice(0, 200)}`);
    this.name = 'ChatRefused';
  }
}

/**
 * Returns when chat answered an internal call with 2xx; otherwise reads the answer and throws
 * ChatRefused for a final refusal, or a plain Error (worth retrying) for anything else.
 */
export async function assertChatAnswered(response: Response, what: string): Promise<void> {
  if (response.ok) return;
  const detail = await response.text().catch(() => '');
  if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) {
    throw new ChatRefused(response.status, what, detail);
  }
  throw new Error(`chat answered ${what} with ${response.status}: ${detail.slice(0, 200)}`);
}
