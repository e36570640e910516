import { describe, expect, it } from 'vitest';
import { MAX_PENDING_LINE_CHARS, NdjsonParser } from './ndjson-parser.js';
import { MAX_PENDING_EVENT_CHARS, SseParser, type SseEvent } from './sse-parser.js';

/** Feeds the text in the given pieces and collects every event, end included. */
function parse(pieces: string[]): SseEvent[] {
  const p = new SseParser();
  const out: SseEvent[] = [];
  for (const piece of pieces) out.push(...p.push(piece));
  out.push(...p.end());
  return out;
}

function everySplit(text: string): string[][] {
  const splits: string[][] = [[text]];
  for (let i = 1; i < text.length; i++) splits.push([text.slice(0, i), text.slice(i)]);
  splits.push(text.split(''));
  return splits;
}

describe('SseParser', () => {
  it('parses LF, CRLF and CR framing alike, however the bytes are split', () => {
    const expected = [
      { event: 'message', data: '{"a":1}' },
      { event: 'delta', data: 'two' },
    ];
    for (const nl of ['\n', '\r\n', '\r']) {
      const text = `data: {"a":1}${nl}${nl}event: delta${nl}data: two${nl}${nl}`;
      for (const pieces of everySplit(text)) expect(parse(pieces)).toEqual(expected);
    }
  });

  it('joins multi-line data with LF and ignores comments, retry and unknown fields', () => {
    const text = ': keep-alive\nretry: 100\nfoo: bar\ndata: line 1\ndata:line 2\ndata\n\n';
    expect(parse([text])).toEqual([{ event: 'message', data: 'line 1\nline 2\n' }]);
  });

  it('keeps the id, strips one leading space only, drops a leading BOM', () => {
    expect(parse(['\uFEFFid: 7\nevent: x\ndata:  spaced\n\n'])).toEqual([
      { event: 'x', data: ' spaced', id: '7' },
    ]);
  });

  it('dispatches nothing for a blank line without data, and resets the event name', () => {
    expect(parse(['event: lonely\n\ndata: after\n\n'])).toEqual([{ event: 'message', data: 'after' }]);
  });

  it('flushes an event the server did not terminate with a blank line', () => {
    expect(parse(['data: last'])).toEqual([{ event: 'message', data: 'last' }]);
    expect(parse(['data: last\r\n'])).toEqual([{ event: 'message', data: 'last' }]);
  });
});

describe('NdjsonParser', () => {
  it('parses lines split across chunks, CRLF endings, blank lines and an unterminated last line', () => {
    const text = '{"a":1}\r\n\n{"b":"x\\ny"}\n{"c":3}';
    for (const pieces of everySplit(text)) {
      const p = new NdjsonParser();
      const out: unknown[] = [];
      for (const piece of pieces) out.push(...p.push(piece));
      out.push(...p.end());
      expect(out).toEqual([{ a: 1 }, { b: 'x\ny' }, { c: 3 }]);
    }
  });

  it('throws on a malformed line', () => {
    expect(() => new NdjsonParser().push('{"a":\n')).toThrow(SyntaxError);
  });
});

describe('a server that never ends its line', () => {
  it('is refused past the bound (malformed data), and a long line in many chunks still parses', () => {
    const chunk = 'x'.repeat(64 * 1024);
    const sse = new SseParser();
    sse.push('data: ');
    expect(() => {
      for (let sent = 0; sent <= MAX_PENDING_EVENT_CHARS; sent += chunk.length) sse.push(chunk);
    }).toThrow(SyntaxError);
    // Many data lines of one event that never ends count too.
    const lines = new SseParser();
    expect(() => {
      for (let sent = 0; sent <= MAX_PENDING_EVENT_CHARS; sent += chunk.length) lines.push(`data: ${chunk}\n`);
    }).toThrow(SyntaxError);
    const ndjson = new NdjsonParser();
    expect(() => {
      for (let sent = 0; sent <= MAX_PENDING_LINE_CHARS; sent += chunk.length) ndjson.push(chunk);
    }).toThrow(SyntaxError);

    // Below the bound: 1 MiB in 64 KiB chunks is one event.
    const ok = new SseParser();
    const events: SseEvent[] = [...ok.push('data: ')];
    for (let i = 0; i < 16; i++) events.push(...ok.push(chunk));
    events.push(...ok.push('\n\n'));
    expect(events).toHaveLength(1);
    expect(events[0]!.data).toHaveLength(16 * chunk.length);
    const okNd = new NdjsonParser();
    const values = [...okNd.push('{"a":"'), ...okNd.push(chunk), ...okNd.push('"}\n')];
    expect(values).toEqual([{ a: chunk }]);
  });
});

