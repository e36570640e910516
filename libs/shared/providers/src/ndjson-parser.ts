// Newline-delimited JSON (Ollama's stream), parsed incrementally: a line may arrive split across
// chunks, and servers on Windows end lines with CRLF.

export class NdjsonParser {
  private buffer = '';

  /** Feed decoded text; returns the complete lines parsed as JSON. Throws on a malformed line. */
  push(chunk: string): unknown[] {
    const buf = this.buffer.length > 0 ? this.buffer + chunk : chunk;
    const out: unknown[] = [];
    let start = 0;
    let nl = buf.indexOf('\n', start);
    while (nl !== -1) {
      parseLine(buf.slice(start, nl), out);
      start = nl + 1;
      nl = buf.indexOf('\n', start);
    }
    this.buffer = start < buf.length ? buf.slice(start) : '';
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
