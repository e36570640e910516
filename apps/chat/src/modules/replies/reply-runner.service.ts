import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import { countTokens, isProviderError, type ProviderError, type ProviderRouter, type RoutedChatRequest } from '@vivier/providers';
import { cutText } from '@vivier/contracts';
import type { ChatDatabase } from '../../database';
import { messagesRepository, type MessageRow, type ReplyOutcome } from '../messages/messages.repository';
import type { SqlRunner } from '../messages/turns.repository';
import type { CachedReply, ResponseCache } from '../cache/response-cache.service';
import type { ChatMetrics } from '../../metrics';
import { isTerminal, messageEventData, terminalEvent, type ReplyEvent, type ReplyEventType } from './reply-events';
import { settleDeletedReply, storeReplyEnd } from './reply-store';
import type { ReplyStreams } from './reply-streams.service';

export interface ReplyStart {
  userMessage: MessageRow;
  assistant: MessageRow;
  /** What the client asked for (an id or an alias); the router resolves it. */
  modelId: string;
  request: RoutedChatRequest;
  /** Our count of the context's tokens (used when a provider reports none, e.g. on a cut). */
  promptTokens: number;
  /** Tokens reserved against the user's quota, settled when the reply ends. */
  quotaReserved: number;
  /** Set when the request may be answered from (and stored in) the response cache. */
  cacheKey?: string;
  cached?: CachedReply;
}

type Listener = (event: ReplyEvent) => void;

/** Maps how a reply failed to the `error` event's stable code. */
export function errorInfoOf(error: unknown): { code: string; detail: string } {
  if (isProviderError(error)) {
    // What the user may read; the vendor's own text is logged (see run()).
    const detail = cutText(error.publicMessage, 2000);
    if (!error.beforeFirstToken || error.kind === 'stream_cut') return { code: 'stream_interrupted', detail };
    if (error.kind === 'auth' || error.kind === 'bad_request' || error.kind === 'not_found') return { code: 'provider_error', detail };
    return { code: 'provider_unavailable', detail };
  }
  return { code: 'internal_error', detail: 'The reply failed unexpectedly.' };
}

/**
 * One reply in flight. It runs on its own, not tied to any HTTP connection: the client that
 * asked may go away and come back (resume), and only a cancel or the provider ends it early.
 * Every event is kept in memory for local listeners and journaled to Redis for everyone else.
 */
export class ReplyRun {
  readonly id: string;
  readonly chatId: string;
  readonly userId: string;
  readonly abort = new AbortController();
  readonly events: ReplyEvent[] = [];
  /** The stored message once the reply has ended. */
  readonly done: Promise<MessageRow>;
  private readonly listeners = new Set<Listener>();
  private resolveDone!: (row: MessageRow) => void;
  private seq = 0;
  private pendingDelta = '';
  private deltaScheduled = false;
  private content = '';
  private readonly deltaEnds: number[] = [];
  abortReason: 'cancel' | 'shutdown' | undefined;

  constructor(
    readonly start: ReplyStart,
    private readonly runner: ReplyRunner,
  ) {
    this.id = start.assistant.id;
    this.chatId = start.assistant.chatId;
    this.userId = start.assistant.userId;
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
  }

  /** Events after `after` now, then live ones, until the end. Returns the unsubscribe function. */
  subscribe(listener: Listener, after = 0): () => void {
    for (const event of this.events) if (event.seq > after) listener(event);
    const last = this.events[this.events.length - 1];
    if (last && isTerminal(last.type)) return () => undefined;
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get finished(): boolean {
    const last = this.events[this.events.length - 1];
    return last !== undefined && isTerminal(last.type);
  }

  emit(type: ReplyEventType, data: unknown): void {
    if (type !== 'delta') this.flushDelta();
    const event: ReplyEvent = { seq: ++this.seq, type, data };
    this.events.push(event);
    if (type === 'delta') this.deltaEnds.push(this.content.length);
    this.runner.journal(this, event);
    for (const listener of this.listeners) listener(event);
    if (isTerminal(type)) this.listeners.clear();
  }

  /**
   * Text that arrives within one event-loop turn goes out as one `delta`: a provider that sends
   * a burst (or a cached reply) costs one event, a paced one still streams token by token.
   */
  addText(text: string): void {
    this.content += text;
    this.pendingDelta += text;
    if (this.deltaScheduled) return;
    this.deltaScheduled = true;
    setImmediate(() => this.flushDelta());
  }

  private flushDelta(): void {
    this.deltaScheduled = false;
    if (!this.pendingDelta) return;
    const text = this.pendingDelta;
    this.pendingDelta = '';
    this.emit('delta', { text });
  }

  get text(): string {
    return this.content;
  }

  get ends(): number[] {
    return this.deltaEnds;
  }

  finish(row: MessageRow): void {
    this.resolveDone(row);
  }
}

export interface ReplyRunnerDeps {
  db: ChatDatabase;
  sql: SqlRunner;
  router: ProviderRouter;
  streams: ReplyStreams;
  cache: ResponseCache;
  metrics: ChatMetrics;
  log: FastifyBaseLogger;
  leaseMs: number;
}

/**
 * Runs replies: streams them from the provider router, journals their events, stores the end
 * (message, quota settlement and `chat.message.completed` in one transaction) and keeps a lease
 * in Redis for each, so another instance can tell a live reply from one whose instance died.
 */
export class ReplyRunner {
  readonly instanceId = randomUUID();
  private readonly runs = new Map<string, ReplyRun>();
  private readonly messages;
  private readonly sql: SqlRunner;
  private leaseTimer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: ReplyRunnerDeps) {
    this.messages = messagesRepository(deps.db);
    this.sql = deps.sql;
    this.leaseTimer = setInterval(() => void this.renewLeases(), Math.max(250, Math.floor(deps.leaseMs / 3)));
    this.leaseTimer.unref();
  }

  get(messageId: string): ReplyRun | undefined {
    return this.runs.get(messageId);
  }

  get running(): number {
    return this.runs.size;
  }

  /**
   * Takes the lease of a reply about to be stored. It goes out with the next batch of Redis
   * writes, well within the grace the sweeper gives new replies (it ignores those younger than
   * a lease); if Redis is away the reply runs without one (and the sweeper, unable to see
   * leases then, leaves it alone).
   */
  claim(messageId: string): void {
    this.deps.streams.setLease(messageId, this.instanceId);
  }

  /** Starts a reply whose messages are stored; returns at once. */
  start(start: ReplyStart): ReplyRun {
    const run = new ReplyRun(start, this);
    this.runs.set(run.id, run);
    this.deps.metrics.repliesInFlight.inc();
    run.emit('message', messageEventData(start.userMessage, run.id));
    void this.execute(run).finally(() => {
      this.runs.delete(run.id);
      this.deps.metrics.repliesInFlight.dec();
      this.deps.streams.releaseLease(run.id);
    });
    return run;
  }

  /** Journals an event of a local run to Redis (stream + the user's channel). */
  journal(run: ReplyRun, event: ReplyEvent): void {
    this.deps.streams.append({ ...event, messageId: run.id, chatId: run.chatId }, run.userId, isTerminal(event.type));
  }

  /** Stops a reply running here; false when it does not run on this instance. */
  cancelLocal(messageId: string, reason: 'cancel' | 'shutdown' = 'cancel'): boolean {
    const run = this.runs.get(messageId);
    if (!run) return false;
    run.abortReason ??= reason;
    run.abort.abort();
    return true;
  }

  private async renewLeases(): Promise<void> {
    try {
      const cancelled = await this.deps.streams.renewLeases([...this.runs.keys()], this.instanceId);
      for (const id of cancelled) this.cancelLocal(id);
    } catch (error) {
      this.deps.log.debug({ err: error }, 'cannot renew reply leases');
    }
  }

  private async execute(run: ReplyRun): Promise<void> {
    const { start } = run;
    const startedAt = performance.now();
    let firstAt: number | undefined;
    let provider: string | undefined;
    let model: string | undefined;
    let usage: { promptTokens: number; completionTokens: number } | undefined;
    let status: ReplyOutcome['status'] = 'completed';
    let error: { code: string; detail: string } | undefined;
    let finishReason: string | undefined;

    try {
      if (start.cached) {
        ({ provider, model } = start.cached);
        firstAt = performance.now();
        run.addText(start.cached.text);
        usage = start.cached.usage;
        finishReason = start.cached.finishReason;
      } else {
        const stream = this.deps.router.stream(start.modelId, { ...start.request, signal: run.abort.signal });
        for await (const event of stream) {
          switch (event.type) {
            case 'route':
              provider = event.provider;
              model = `${event.provider}/${event.model}`;
              break;
            case 'delta':
              if (firstAt === undefined) {
                firstAt = performance.now();
                this.deps.metrics.timeToFirstToken.observe((firstAt - startedAt) / 1000);
              }
              run.addText(event.text);
              break;
            case 'usage':
              usage = { promptTokens: event.promptTokens, completionTokens: event.completionTokens };
              break;
            case 'finish':
              finishReason = event.reason;
              break;
          }
        }
      }
      // A stream may end quietly when aborted: a cancelled reply is cancelled however it ended.
      if (run.abort.signal.aborted && run.abortReason === 'cancel') status = 'cancelled';
    } catch (caught) {
      if (run.abort.signal.aborted && run.abortReason === 'cancel') {
        status = 'cancelled';
      } else {
        status = 'failed';
        error = run.abortReason === 'shutdown' ? { code: 'service_shutdown', detail: 'The service stopped while the reply was running.' } : errorInfoOf(caught);
        provider ??= isProviderError(caught) ? (caught as ProviderError).provider : undefined;
        if (!isProviderError(caught)) this.deps.log.error({ err: caught, messageId: run.id }, 'reply failed');
        else if (run.abortReason !== 'shutdown') this.deps.log.warn({ err: caught, messageId: run.id, kind: caught.kind }, 'reply failed at the provider');
      }
    }

    // Tokens were spent unless the request failed before anything came back: count what the
    // provider did not report (a cut or a cancel reports nothing), so usage is what was generated.
    const spent = status === 'completed' || run.text.length > 0 || firstAt !== undefined;
    // The reply's own count, by our tokenizer: what it weighs in a later turn's context.
    const replyTokens = await countTokens(run.text);
    if (spent && !usage) usage = { promptTokens: start.promptTokens, completionTokens: replyTokens };
    if (usage) run.emit('usage', usage);

    const completedAt = new Date();
    const outcome: ReplyOutcome = {
      content: run.text,
      status,
      provider: provider ?? null,
      model: model ?? start.modelId,
      promptTokens: usage?.promptTokens ?? null,
      completionTokens: usage?.completionTokens ?? null,
      contextTokens: replyTokens,
      latencyMs: Math.round(performance.now() - startedAt),
      timeToFirstTokenMs: firstAt === undefined ? null : Math.round(firstAt - startedAt),
      cached: start.cached !== undefined,
      errorCode: error?.code ?? null,
      errorDetail: error?.detail ?? null,
      deltaEnds: [...run.ends],
      completedAt,
    };
    const row = await this.store(run, outcome);
    if (row) {
      run.emit(terminalEvent(row).type, terminalEvent(row).data);
      run.finish(row);
    } else {
      // Ended elsewhere meanwhile (the sweeper, a deleted chat): report what is stored, if anything.
      const stored = await this.messages.findById(run.id).catch(() => null);
      if (stored === undefined) {
        // No row at all: its chat was deleted, which released the reservation; count what was generated.
        await settleDeletedReply(this.sql, { ...run.start.assistant, quotaReserved: run.start.quotaReserved }, outcome).catch((error: unknown) =>
          this.deps.log.error({ err: error, messageId: run.id }, 'cannot count the usage of a reply whose chat was deleted'),
        );
      }
      // No row because its chat was deleted meanwhile: said so (the send answers 404), not as a
      // reply lost to a fault. (The delete cancelled it if it was still running.) A row still
      // streaming was ended by no one: the database refused this end (the sweeper ends the row
      // from the journal once it takes writes again), and the client must not read it as a reply
      // that is still coming.
      const ended = stored && stored.status !== 'streaming' ? stored : undefined;
      const final = ended ?? {
        ...start.assistant,
        ...outcome,
        status: 'failed' as const,
        ...(stored === undefined
          ? { errorCode: 'chat_deleted', errorDetail: 'The chat was deleted while its reply ran.' }
          : { errorCode: 'reply_lost', errorDetail: 'The reply could not be stored.' }),
      };
      run.emit(terminalEvent(final).type, terminalEvent(final).data);
      run.finish(final);
    }
    this.deps.metrics.replies.inc({ status: row?.status ?? 'failed', cached: String(outcome.cached) });
    if (row && status === 'completed' && start.cacheKey && !start.cached && (finishReason === 'stop' || finishReason === 'length') && provider && model && usage) {
      await this.deps.cache.put(start.cacheKey, { text: run.text, provider, model, usage, finishReason });
    }
  }

  /**
   * The end of a reply in one transaction: the message, the quota settlement and the
   * `chat.message.completed` event. Retried for a while if the database is away; if it never
   * answers, the lease lapses and the sweeper fails the reply from its Redis journal.
   */
  private async store(run: ReplyRun, outcome: ReplyOutcome): Promise<MessageRow | undefined> {
    const row = { ...run.start.assistant, quotaReserved: run.start.quotaReserved };
    for (let attempt = 1; ; attempt++) {
      try {
        return await storeReplyEnd(this.sql, row, outcome, ['streaming']);
      } catch (error) {
        if (attempt >= 5) {
          this.deps.log.error({ err: error, messageId: run.id }, 'cannot store the end of a reply');
          return undefined;
        }
        await new Promise((resolve) => setTimeout(resolve, 200 * 2 ** attempt));
      }
    }
  }

  /** Waits for the replies in flight (graceful shutdown), then stops those still running. */
  async drain(timeoutMs: number): Promise<void> {
    clearInterval(this.leaseTimer);
    // Until none is left: a request that arrived just before the signal may start its reply
    // while the first ones finish, and it must finish too (within the time given).
    const deadline = Date.now() + timeoutMs;
    while (this.runs.size > 0 && Date.now() < deadline) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all([...this.runs.values()].map((run) => run.done)), new Promise((resolve) => (timer = setTimeout(resolve, Math.min(100, deadline - Date.now()))))]);
      clearTimeout(timer);
    }
    for (const id of this.runs.keys()) this.cancelLocal(id, 'shutdown');
    await Promise.all([...this.runs.values()].map((run) => run.done));
    await this.deps.streams.flush();
  }
}

