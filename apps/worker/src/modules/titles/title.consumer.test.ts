import { describe, expect, it } from 'vitest';
import { cleanTitle } from './title.consumer';

describe('cleanTitle', () => {
  it('keeps the first non-empty line, without quotes, a "Title:" prefix or final punctuation', () => {
    expect(cleanTitle('\n  "Three days in Lisbon."  \nmore')).toBe('Three days in Lisbon');
    expect(cleanTitle('Title: **Tiles and seafood**')).toBe('Tiles and seafood');
    expect(cleanTitle('   ')).toBe('');
  });

  it('cuts a long answer at a word boundary, within the contract’s 200 characters', () => {
    const long = 'word '.repeat(100);
    const title = cleanTitle(long);
    expect(title.length).toBeLessThanOrEqual(81);
    expect(title.endsWith('…')).toBe(true);
    expect(title).not.toMatch(/\s…$/);
  });
});
