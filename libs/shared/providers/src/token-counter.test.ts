import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { countPromptTokens, countRecurringTokens, loadTokenizer, TokenCountCache } from './token-counter.js';

const longText = (words: number) => `${randomUUID()} ${'the river runs to the sea '.repeat(words / 6)}`;

describe('token counting', () => {
  afterEach(() => vi.restoreAllMocks());

  it('counts a history sent again from memory, with the same result as encoding it', async () => {
    const encoder = await loadTokenizer();
    const history = longText(600);
    const messages = [
      { role: 'user' as const, content: history },
      { role: 'assistant' as const, content: 'ok' },
      { role: 'user' as const, content: [{ type: 'text' as const, text: history }] },
    ];
    const encoded = encoder.encode(history, [], []).length;
    const expected = 3 + 3 * 4 + encoded + encoder.encode('ok', [], []).length + encoded;

    const encode = vi.spyOn(encoder, 'encode');
    expect(await countPromptTokens(messages)).toBe(expected);
    // The long text once (its second occurrence is already remembered), the short one every time.
    expect(encode.mock.calls.map(([text]) => text.length)).toEqual([history.length, 2]);
    encode.mockClear();

    expect(await countPromptTokens(messages)).toBe(expected);
    expect(encode.mock.calls.map(([text]) => text)).toEqual(['ok']);
  });

  it('counts a recurring text (a system prompt) once', async () => {
    const encoder = await loadTokenizer();
    const prompt = longText(300);
    const encode = vi.spyOn(encoder, 'encode');
    const first = await countRecurringTokens(prompt);
    expect(await countRecurringTokens(prompt)).toBe(first);
    expect(encode).toHaveBeenCalledTimes(1);
    expect(first).toBe(encoder.encode(prompt, [], []).length);
  });

  it('holds at most its number of texts and drops the least recently used first', async () => {
    const encoder = await loadTokenizer();
    const cache = new TokenCountCache(2, 100);
    const [a, b, c] = [longText(120), longText(120), longText(120)];
    const encode = vi.spyOn(encoder, 'encode');
    const counted = () => encode.mock.calls.map(([text]) => [a, b, c].indexOf(text));

    cache.count(encoder, a);
    cache.count(encoder, b);
    cache.count(encoder, a); // a is now the most recently used
    cache.count(encoder, c); // three texts: b goes
    expect(cache.size).toBe(2);
    expect(counted()).toEqual([0, 1, 2]);

    encode.mockClear();
    cache.count(encoder, a);
    cache.count(encoder, c);
    expect(counted()).toEqual([]);
    cache.count(encoder, b);
    expect(counted()).toEqual([1]);
  });

  it('encodes short texts every time instead of keeping them', async () => {
    const encoder = await loadTokenizer();
    const cache = new TokenCountCache(10, 100);
    const encode = vi.spyOn(encoder, 'encode');
    expect(cache.count(encoder, 'a short message')).toBe(cache.count(encoder, 'a short message'));
    expect(encode).toHaveBeenCalledTimes(2);
    expect(cache.size).toBe(0);
  });
});
