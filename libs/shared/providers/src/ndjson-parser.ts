// Newline-delimited JSON (Ollama's stream), parsed incrementally: a line may arrive split across
// chunks, and servers on Windows end lines with CRLF.

/** The longest line held unfinished (see MAX_PENDING_EVENT_CHARS); past it, push() throws a SyntaxError. */
export const MAX_PENDING_LINE_CHARS = 4 * 1024 * 1024;

export class NdjsonParser {
  private buffer = '';

  /** Feed decoded text; returns the complete lines parsed as JSON. Throws on a malformed line. */
  push(chunk: string): unknown[] {
    const held = this.buffer.length;
    const buf = held > 0 ? this.buffer + chunk : chunk;
    const out: unknown[] = [];
    let start = 0;
    // What was held holds no newline: only the new text is scanned.
    let nl = buf.indexOf('\n', held);
    while (nl !== -1) {
      parseLine(buf.slice(start, nl), out);
      start = nl + 1;
      nl = buf.indexOf('\n', start);
    }
    this.buffer = start < buf.length ? buf.slice(start) : '';
    if (this.buffer.length > MAX_PENDING_LINE_CHARS) throw new SyntaxError(`a line longer than ${MAX_PENDING_LINE_CHARS} characters, still unfinished`);
    return out;
  }

  /** End of the body: a last line without a newline still counts. */
  end(): unknown[] {
    const out: unknown[] = [];
    if (this.buffer.length > 0) parseLine(this.buffer, out);
    this.buffer = '';
    return out;
  }
}

function parseLine(raw: string, out: unknown[]): void {
  const line = raw.trim();
  if (line.length === 0) return;
  out.push(JSON.parse(line));
}
