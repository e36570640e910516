import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';

/**
 * Headers that describe one connection, not the message (RFC 9110 §7.6.1), and `host`, which
 * names the gateway on the way in and the service on the way out: never copied across the hop
 * in either direction. `expect` is answered by the gateway's own server (100 Continue) and undici
 * refuses to send it.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'expect',
  'host',
]);

/** The names a `Connection` header lists: hop-by-hop too (RFC 9110 §7.6.1). */
function connectionListed(headers: IncomingHttpHeaders): Set<string> | undefined {
  const value = headers.connection;
  if (typeof value !== 'string' || value === 'keep-alive' || value === 'close') return undefined;
  const names = new Set<string>();
  for (const name of value.split(',')) {
    const trimmed = name.trim().toLowerCase();
    if (trimmed) names.add(trimmed);
  }
  return names;
}

/**
 * The end-to-end headers of a message, less `drop` (lowercase names), as a new object: what a
 * proxy may pass on.
 */
export function endToEnd(headers: IncomingHttpHeaders, drop?: ReadonlySet<string>): Record<string, string | string[]> {
  const listed = connectionListed(headers);
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP.has(name) || listed?.has(name) || drop?.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/**
 * One request forwarded to a service over undici's dispatcher, its answer written straight to the
 * client's response as it arrives: the head with the service's status and headers (through
 * `head`), each body chunk as it comes, honouring the client's backpressure (the service's
 * connection is paused while the client's buffer is full). No body object, stream pipeline or
 * framework send in between: this is the hot path of every proxied request.
 *
 * `fail` gets the error of a request that failed: before the head was written (the service
 * unreachable, a timeout, the request body refused) it is the caller's to answer; after it, the
 * client connection has been destroyed, as an interrupted answer cannot be told apart from a whole
 * one otherwise. `abort()` ends the request to the service (the client went away).
 */
export class Forwarding implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined;
  private aborted = false;
  private started = false;

  constructor(
    private readonly res: ServerResponse,
    private readonly head: (statusCode: number, headers: IncomingHttpHeaders) => OutgoingHttpHeaders,
    private readonly fail: (error: Error, headSent: boolean) => void,
  ) {}

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.controller?.abort(new Error('the client went away'));
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.aborted) controller.abort(new Error('the client went away'));
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (statusCode < 200 || this.aborted) return;
    this.started = true;
    this.res.writeHead(statusCode, this.head(statusCode, headers));
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.aborted || this.res.destroyed) return;
    if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once('drain', () => controller.resume());
    }
  }

  onResponseEnd(): void {
    if (!this.aborted && !this.res.destroyed) this.res.end();
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    if (this.aborted) return; // the client has gone: nothing to answer, nothing went wrong
    if (this.started) this.res.destroy();
    this.fail(error, this.started);
  }
}
