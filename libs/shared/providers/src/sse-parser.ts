// Server-sent events, parsed incrementally as the WHATWG HTML spec (§9.2.6) describes: lines end
// with CRLF, LF or CR (Gemini frames with CRLF, most others with LF), `data` lines of one event are
// joined with "\n", lines starting with ":" are comments (keep-alives), an empty line dispatches.

export interface SseEvent {
  /** The `event:` field, or 'message' when absent. */
  event: string;
  data: string;
  id?: string;
}

/**
 * The most text one event may hold unfinished (a line without its end, data lines without the
 * blank line): far above any real event (a delta), and a bound on what a server that never ends
 * its line can make this process hold. Past it, push() throws a SyntaxError (malformed data).
 */
export const MAX_PENDING_EVENT_CHARS = 4 * 1024 * 1024;

export class SseParser {
  private buffer = '';
  /** Characters held in `data` lines of the event not dispatched yet. */
  private pendingData = 0;
  private data: string[] = [];
  private eventName = '';
  private id: string | undefined;
  private started = false;
  /** A chunk ended with CR: a LF at the start of the next one belongs to the same line break. */
  private pendingCr = false;

  /** Feed decoded text; returns the events completed by it (often none or one). */
  push(chunk: string): SseEvent[] {
    let text = chunk;
    if (this.pendingCr) {
      this.pendingCr = false;
      if (text.startsWith('\n')) text = text.slice(1);
    }
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    const buf = this.buffer.length > 0 ? this.buffer + text : text;
    const out: SseEvent[] = [];
    let start = 0;
    const n = buf.length;
    // What was buffered holds no line break: only the new text is scanned (a long line arriving in
    // many chunks is not scanned again for each of them).
    for (let i = this.buffer.length; i < n; i++) {
      const c = buf.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.line(buf.slice(start, i), out);
      if (c === 13) {
        if (i + 1 < n) {
          if (buf.charCodeAt(i + 1) === 10) i++;
        } else {
          this.pendingCr = true;
        }
      }
      start = i + 1;
    }
    this.buffer = start < n ? buf.slice(start) : '';
    if (this.buffer.length + this.pendingData > MAX_PENDING_EVENT_CHARS) {
      throw new SyntaxError(`an event longer than ${MAX_PENDING_EVENT_CHARS} characters, still unfinished`);
    }
    return out;
  }

  /**
   * End of the body. The spec drops an event that was not followed by a blank line; servers that
   * omit the final blank line exist, so a pending event is dispatched when the body ended cleanly.
   */
  end(): SseEvent[] {
    const out: SseEvent[] = [];
    if (this.buffer.length > 0) {
      this.line(this.buffer, out);
      this.buffer = '';
    }
    this.line('', out);
    return out;
  }

  private line(line: string, out: SseEvent[]): void {
    if (line.length === 0) {
      if (this.data.length > 0) {
        const ev: SseEvent = { event: this.eventName || 'message', data: this.data.join('\n') };
        if (this.id !== undefined) ev.id = this.id;
        out.push(ev);
      }
      this.data = [];
      this.pendingData = 0;
      this.eventName = '';
      return;
    }
    if (line.charCodeAt(0) === 58 /* : */) return;
    const colon = line.indexOf(':');
    let field: string;
    let value: string;
    if (colon === -1) {
      field = line;
      value = '';
    } else {
      field = line.slice(0, colon);
      value = line.charCodeAt(colon + 1) === 32 ? line.slice(colon + 2) : line.slice(colon + 1);
    }
    switch (field) {
      case 'data':
        this.data.push(value);
        this.pendingData += value.length + 1;
        break;
      case 'event':
        this.eventName = value;
        break;
      case 'id':
        if (!value.includes('\u0000')) this.id = value;
        break;
      default:
        // `retry` and unknown fields mean nothing to a one-shot request.
        break;
    }
  }
}
