import { signInternalCall } from '@vivier/service-kit';
import { assertChatAnswered } from '../chat-internal';

/** A line of chat's export stream: `{type:'chat'|'message'|'file', ...}`. */
export interface ExportLine {
  type: 'chat' | 'message' | 'file';
  [field: string]: unknown;
}

const LINE_TYPES = new Set(['chat', 'message', 'file']);

/**
 * The worker may not read chat's tables: it asks chat, over the internal network, for a user's
 * chats, messages and files as NDJSON (`GET /internal/v1/users/:userId/export`, signed with the
 * internal-call secret). Yields each line, checked, as it arrives.
 */
export async function* fetchUserExport(
  chatUrl: string,
  secret: string,
  userId: string,
  options: { signal?: AbortSignal } = {},
): AsyncGenerator<ExportLine> {
  const url = new URL(`/internal/v1/users/${encodeURIComponent(userId)}/export`, chatUrl);
  const response = await fetch(url, {
    headers: { accept: 'application/x-ndjson', ...signInternalCall(secret) },
    ...(options.signal ? { signal: options.signal } : {}),
  });
  await assertChatAnswered(response, 'the export');
  if (!response.body) throw new Error('chat export answered without a body');
  const decoder = new TextDecoder();
  let buffered = '';
  let lineNo = 0;
  const parse = (text: string): ExportLine | undefined => {
    lineNo += 1;
    if (text.trim() === '') return undefined;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new Error(`chat export line ${lineNo} is not JSON`);
    }
    if (typeof value !== 'object' || value === null || !LINE_TYPES.has((value as { type?: unknown }).type as string)) {
      throw new Error(`chat export line ${lineNo} has no known type (chat, message, file)`);
    }
    return value as ExportLine;
  };
  for await (const chunk of response.body) {
    // Only the new text can hold the next newline: a long line (a file inline) is not scanned again per chunk.
    const from = buffered.length;
    buffered += decoder.decode(chunk as Uint8Array, { stream: true });
    let newline = buffered.indexOf('\n', from);
    while (newline >= 0) {
      const line = parse(buffered.slice(0, newline));
      buffered = buffered.slice(newline + 1);
      if (line) yield line;
      newline = buffered.indexOf('\n');
    }
  }
  buffered += decoder.decode();
  const last = parse(buffered);
  if (last) yield last;
}
