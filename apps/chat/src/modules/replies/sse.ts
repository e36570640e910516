import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ReplyEvent } from './reply-events';

/** True when the client asked for an SSE stream. */
export function wantsEventStream(request: FastifyRequest): boolean {
  const accept = request.headers.accept ?? '';
  return accept.split(',').some((part) => part.trim().toLowerCase().startsWith('text/event-stream'));
}

/** The id a reconnecting client saw last: the `Last-Event-ID` header (EventSource sends it), or `?lastEventId=`. */
export function lastEventIdOf(request: FastifyRequest, query: { lastEventId?: number }): number {
  const header = request.headers['last-event-id'];
  const value = typeof header === 'string' && header.trim() !== '' ? Number(header.trim()) : query.lastEventId;
  return value !== undefined && Number.isInteger(value) && value >= 0 ? value : 0;
}

/**
 * An SSE response written straight to the socket (no buffering anywhere, so the gateway can pass
 * each event on as it comes): `id:` is the event's sequence number within the reply. A comment
 * line keeps idle connections open through proxies.
 */
export class SseStream {
  private readonly heartbeat: NodeJS.Timeout;
  private ended = false;
  /** Aborted when the client goes away (or the stream ended). */
  readonly closed = new AbortController();

  constructor(
    request: FastifyRequest,
    private readonly reply: FastifyReply,
    heartbeatMs: number,
  ) {
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, {
      ...(reply.getHeaders() as Record<string, string>),
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      'x-accel-buffering': 'no',
      connection: 'keep-alive',
      'x-request-id': request.id,
    });
    raw.flushHeaders();
    const onClose = () => {
      this.ended = true;
      clearInterval(this.heartbeat);
      this.closed.abort();
    };
    raw.once('close', onClose);
    this.heartbeat = setInterval(() => {
      if (!this.ended) raw.write(': keep-alive\n\n');
    }, heartbeatMs);
    this.heartbeat.unref();
  }

  get open(): boolean {
    return !this.ended;
  }

  send(event: ReplyEvent): void {
    if (this.ended) return;
    this.reply.raw.write(`id: ${event.seq}\nevent: ${event.type}\ndata: ${JSON.stringify(event.data)}\n\n`);
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.heartbeat);
    this.reply.raw.end();
    this.closed.abort();
  }
}
