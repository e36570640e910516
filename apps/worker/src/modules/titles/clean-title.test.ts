import { describe, expect, it } from 'vitest';
import { cleanTitle } from './title.consumer';

describe('cleanTitle', () => {
  it('cuts a long title without a space to cut at between characters, never inside one', () => {
    // CJK with emoji: no space after position 20, and an emoji (two UTF-16 units) astride the limit.
    const raw = `${'旅'.repeat(79)}🚋${'行'.repeat(30)}`;
    const title = cleanTitle(raw);
    expect(/[\ud800-\udbff](?![\udc00-\udfff])/.test(title)).toBe(false);
    expect(title).toBe(`${'旅'.repeat(79)}…`);
  });
});
