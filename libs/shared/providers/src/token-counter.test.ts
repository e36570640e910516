import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { countPromptTokens, countRecurringTokens, loadTokenizer, TokenCountCache } from './token-counter.js';

const longText = (words: number) => `${randomUUID()} ${'the river runs to the sea '.repeat(words / 6)}`;

describe('token counting', () => {
  afterEach(() => vi.restoreAllMocks());

  it('counts as OpenAI’s tiktoken does, special-token text included, in both encodings', async () => {
    // Counts from tiktoken's own ranks (js-tiktoken 1.0.21, which this replaced, gave the same).
    const texts = [
      'Hello, world!',
      'echo: The quick brown fox jumps over the lazy dog',
      'Здравствуйте! 你好，世界。 🙂 ünïcödé',
      'A literal <|endoftext|> and <|im_start|> stay text.',
      '    indented code\n\tfn main() { println!("{}", 42); }\n',
      'x'.repeat(1000),
      '',
    ];
    const o200k = await loadTokenizer('o200k_base');
    const cl100k = await loadTokenizer('cl100k_base');
    expect(texts.map((t) => o200k.count(t))).toEqual([4, 11, 12, 19, 15, 125, 0]);
    expect(texts.map((t) => cl100k.count(t))).toEqual([4, 11, 23, 17, 15, 125, 0]);
    expect(await countPromptTokens([{ role: 'user', content: 'Hello, world!' }])).toBe(3 + 4 + 4);
  });

  it('counts a history sent again from memory, with the same result as counting it', async () => {
    const encoder = await loadTokenizer();
    const history = longText(600);
    const messages = [
      { role: 'user' as const, content: history },
      { role: 'assistant' as const, content: 'ok' },
      { role: 'user' as const, content: [{ type: 'text' as const, text: history }] },
    ];
    const counted = encoder.count(history);
    const expected = 3 + 3 * 4 + counted + encoder.count('ok') + counted;

    const count = vi.spyOn(encoder, 'count');
    expect(await countPromptTokens(messages)).toBe(expected);
    // The long text once (its second occurrence is already remembered), the short one every time.
    expect(count.mock.calls.map(([text]) => text.length)).toEqual([history.length, 2]);
    count.mockClear();

    expect(await countPromptTokens(messages)).toBe(expected);
    expect(count.mock.calls.map(([text]) => text)).toEqual(['ok']);
  });

  it('counts a recurring text (a system prompt) once', async () => {
    const encoder = await loadTokenizer();
    const prompt = longText(300);
    const count = vi.spyOn(encoder, 'count');
    const first = await countRecurringTokens(prompt);
    expect(await countRecurringTokens(prompt)).toBe(first);
    expect(count).toHaveBeenCalledTimes(1);
    expect(first).toBe(encoder.count(prompt));
  });

  it('holds at most its number of texts and drops the least recently used first', async () => {
    const encoder = await loadTokenizer();
    const cache = new TokenCountCache(2, 100);
    const [a, b, c] = [longText(120), longText(120), longText(120)];
    const count = vi.spyOn(encoder, 'count');
    const seen = () => count.mock.calls.map(([text]) => [a, b, c].indexOf(text));

    cache.count(encoder, a);
    cache.count(encoder, b);
    cache.count(encoder, a); // a is now the most recently used
    cache.count(encoder, c); // three texts: b goes
    expect(cache.size).toBe(2);
    expect(seen()).toEqual([0, 1, 2]);

    count.mockClear();
    cache.count(encoder, a);
    cache.count(encoder, c);
    expect(seen()).toEqual([]);
    cache.count(encoder, b);
    expect(seen()).toEqual([1]);
  });

  it('counts short texts every time instead of keeping them', async () => {
    const encoder = await loadTokenizer();
    const cache = new TokenCountCache(10, 100);
    const count = vi.spyOn(encoder, 'count');
    expect(cache.count(encoder, 'a short message')).toBe(cache.count(encoder, 'a short message'));
    expect(count).toHaveBeenCalledTimes(2);
    expect(cache.size).toBe(0);
  });
});
