import type { Consumer, EachBatchPayload, IHeaders, Kafka, KafkaMessage } from 'kafkajs';
import type { FastifyBaseLogger } from 'fastify';
import { and, DrizzleQueryError, eq, inArray, sql } from 'drizzle-orm';
import {
  contextFromHeaders,
  endSpan,
  otelContext,
  otelTrace,
  serviceTracer,
  SpanKind,
  startChildSpan,
  TRACER_KEY,
  type TraceContext,
} from '@vivier/service-kit';
import {
  KAFKA_HEADERS,
  EventValidationError,
  UnknownEventTypeError,
  deadLetterTopic,
  nameBasedUuid,
  parseEvent,
  retryTopic,
  type AnyEvent,
  type ConsumerGroup,
  type EventType,
  type EventByType,
  type Topic,
} from '@vivier/contracts';
import type { Executor } from './publish';
import type { MessagingMetrics } from './metrics';
import type { EventProducer } from './producer';
import type { messagingTables } from './tables';

type ProcessedEventsTable = ReturnType<typeof messagingTables>['processedEvents'];

export interface HandlerContext {
  /** The transaction the effect must be written in; the processed-event record is in it too. */
  tx: Executor;
  topic: Topic;
  partition: number;
  /** 1 on the first delivery, 2 on the first retry, … */
  attempt: number;
  /**
   * Runs `fn` once the transaction has committed (never if it rolls back): for side effects
   * outside the database that must not be seen before the effect is (a notification, a push).
   * Errors in `fn` are logged, not retried.
   */
  afterCommit(fn: () => void | Promise<void>): void;
  /**
   * Aborted when the handler has run for `handlerTimeoutMs`, or when the consumer stops: pass it to
   * whatever the handler waits on outside the database (HTTP calls, S3), so that a call that hangs
   * ends. A handler still running a few seconds later is left behind (see withinDeadline).
   */
  signal: AbortSignal;
}

/** Heartbeat answers that mean this member must rejoin the group (kafkajs protocol error types). */
const REJOIN_ERRORS: ReadonlySet<string> = new Set(['REBALANCE_IN_PROGRESS', 'UNKNOWN_MEMBER_ID', 'ILLEGAL_GENERATION']);

/** The event was applied by another member while this one ran its handler. */
class AppliedElsewhere extends Error {}

export type EventHandler<E extends AnyEvent = AnyEvent> = (event: E, context: HandlerContext) => Promise<void>;

/** Handlers by event type; events of other types on the subscribed topics are skipped. */
export type EventHandlers = { [T in EventType]?: EventHandler<EventByType<T>> };

export interface RetryPolicy {
  /** Total attempts, the first delivery included. */
  attempts: number;
  initialDelayMs: number;
  maxDelayMs: number;
}

export interface EventConsumerOptions {
  kafka: Kafka;
  /** Shared producer for retry and dead-letter records. */
  producer: EventProducer;
  group: ConsumerGroup;
  topics: Topic[];
  handlers: EventHandlers;
  db: { transaction<T>(fn: (tx: Executor) => Promise<T>): Promise<T> };
  processedEvents: ProcessedEventsTable;
  logger: FastifyBaseLogger;
  metrics?: MessagingMetrics;
  retry?: Partial<RetryPolicy>;
  sessionTimeoutMs?: number;
  heartbeatIntervalMs?: number;
  partitionsConsumedConcurrently?: number;
  /** Start from the earliest offset when the group has none (default true: nothing is skipped). */
  fromBeginning?: boolean;
  /** Longest fetch wait; shorter means faster rebalances and shutdowns. */
  maxWaitTimeMs?: number;
  /**
   * How long stop() waits for the member to commit and leave its group, once its handlers have
   * ended (default: the session timeout, at most 10 s). Leaving waits for a rebalance under way,
   * and a rebalance waits for every member; past this the coordinator drops a member that went
   * quiet anyway, so the rest of the shutdown (the relay's marks, the pools) goes on and the
   * leave finishes behind it.
   */
  stopTimeoutMs?: number;
  /**
   * Apply runs of consecutive first deliveries in one transaction (up to 100), replaying a failed
   * run record by record. Several times the throughput, but a failed run re-invokes the handlers
   * of its other records: only for handlers whose every effect is in the transaction (read
   * models), never for handlers that call out (providers, S3, email).
   */
  applyInRuns?: boolean;
  /**
   * How long one handler may run (default 10 minutes): then its `signal` aborts, and if it has
   * not ended 5 s later its transaction's connection is ended and the record treated as failed
   * (retried, then dead-lettered); the partition goes on. Not applied to runs (applyInRuns), whose
   * handlers only write.
   */
  handlerTimeoutMs?: number;
}

/** Kafka headers the messaging library sets on retry and dead-letter records. */
export const RETRY_HEADERS = {
  attempt: 'vivier-attempt',
  notBefore: 'vivier-not-before',
  originalTopic: 'vivier-original-topic',
  originalPartition: 'vivier-original-partition',
  originalOffset: 'vivier-original-offset',
  error: 'vivier-error',
  reason: 'vivier-dead-letter-reason',
  failedAt: 'vivier-failed-at',
} as const;

function header(headers: IHeaders | undefined, name: string): string | undefined {
  const value = headers?.[name];
  if (value === undefined) return undefined;
  const first = Array.isArray(value) ? value[0] : value;
  return first === undefined ? undefined : first.toString();
}

/** Default of `handlerTimeoutMs`, and how long a handler whose signal aborted has to end before it is left behind. */
const HANDLER_TIMEOUT_MS = 600_000;
const HANDLER_ABORT_GRACE_MS = 5_000;
const STILL_RUNNING = Symbol('still running');
/** The signal of handlers applied in runs: they only write, and have no deadline. */
const NO_DEADLINE = new AbortController().signal;

/** The reason a handler's signal aborts with when the consumer stops: its record stays unresolved, for the next member. */
class ConsumerStopping extends Error {
  constructor() {
    super('the consumer is stopping');
  }
}

/** A handler that ran past `handlerTimeoutMs`: the reason its signal aborts with (`aborted`), or thrown when it did not end then. */
export class HandlerTimedOut extends Error {
  constructor(timeoutMs: number, how: 'aborted' | 'left_behind') {
    super(`the handler ran for more than ${timeoutMs} ms ${how === 'aborted' ? 'and its signal was aborted' : 'and did not end when its signal aborted'}`);
    this.name = 'HandlerTimedOut';
  }
}

/** Pauses of a partition whose record the database could not take: doubling from 500 ms to 10 s. */
const DATABASE_BACKOFF_MS = 500;
const DATABASE_BACKOFF_MAX_MS = 10_000;

/**
 * SQLSTATEs of a database that is away or refused for a moment, not of an event that cannot be
 * applied: lost connections, shutdowns and start-ups, too many connections, serialization failures
 * and deadlocks. Listed one by one: 08P01 (a protocol violation) fails every time.
 */
const TRANSIENT_SQLSTATES = new Set(['08000', '08001', '08003', '08004', '08006', '57P01', '57P02', '57P03', '53300', '40001', '40P01']);
/** What node-postgres itself throws when a connection ends or none can be had in time. */
const PG_CONNECTION_MESSAGE = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error)/;

/**
 * Whether a handler's failure is the database's (gone, shutting down, a deadlock): a PostgreSQL
 * error with one of those codes, or node-postgres' own connection errors, thrown as is or wrapped
 * by drizzle. Errors of other calls (a provider, S3, another service) never count, whatever their
 * causes: socket codes alone cannot tell a database connection from any other.
 */
export function isTransientDatabaseError(error: unknown): boolean {
  if (error === null || typeof error !== 'object') return false;
  const { code, severity, message } = error as { code?: unknown; severity?: unknown; message?: unknown };
  // A PostgreSQL error response carries its severity next to the SQLSTATE.
  if (typeof code === 'string' && typeof severity === 'string' && TRANSIENT_SQLSTATES.has(code)) return true;
  if (typeof message === 'string' && PG_CONNECTION_MESSAGE.test(message) && code === undefined) return true;
  return error instanceof DrizzleQueryError && isTransientDatabaseError(error.cause);
}

/**
 * A record not applied because the database was away, or not passed on to its retry or
 * dead-letter topic because Kafka or the database was: tried again in place, no attempt spent.
 */
class TriedLater extends Error {
  constructor(
    readonly reason: unknown,
    readonly what: 'apply' | 'forward' = 'apply',
  ) {
    super(what === 'apply' ? 'the database is away for now' : 'the record could not be passed on for now');
  }
}

/**
 * The id under which a group records, in processed_events next to the ids of applied events, that
 * it forwarded a record to its retry or dead-letter topic. A record redelivered after its offset
 * commit was lost (a rebalance while the commit was under way, a crash) finds it and is neither
 * retried nor dead-lettered a second time. Derived from the record's place and content (a UUIDv8
 * from SHA-256): a replay of the same event is a new record and is tried afresh, and a topic that
 * was recreated cannot match an old record at the same offset.
 */
export function forwardingMarker(topic: string, partition: number, message: Pick<KafkaMessage, 'offset' | 'value'>): string {
  return nameBasedUuid('sha256', `forwarded ${topic}/${partition}/${message.offset}\n`, message.value ?? Buffer.alloc(0));
}

/** The trace a record continues (its `traceparent`/`tracestate` headers), as this group's work. */
function recordContext(group: string, message: KafkaMessage): TraceContext {
  const carrier = { traceparent: header(message.headers, KAFKA_HEADERS.traceparent), tracestate: header(message.headers, 'tracestate') };
  return contextFromHeaders(carrier).setValue(TRACER_KEY, serviceTracer(group));
}

function consumerSpanAttributes(group: string, topic: string, partition: number, messages: KafkaMessage[]) {
  return {
    'messaging.system': 'kafka',
    'messaging.operation.type': 'process',
    'messaging.destination.name': topic,
    'messaging.destination.partition.id': String(partition),
    'messaging.consumer.group.name': group,
    'messaging.batch.message_count': messages.length,
    'messaging.kafka.offset': Number(messages[0]?.offset ?? -1),
  };
}

/**
 * Commits resolved offsets without holding up the batches that resolved them. kafkajs's autoCommit
 * sends one OffsetCommit per batch and waits for it before the partition's next fetch; with several
 * partitions in flight that is several commits per round trip, and each one a chance to wait on
 * the coordinator. Here one commit is in flight at a time, carrying every partition's latest
 * resolved offset; requests made meanwhile are folded into the next one. An offset committed a
 * little later only means a few more redeliveries after a crash, and redeliveries change nothing
 * (processed-event records).
 */
class OffsetCommitter {
  private inFlight: Promise<void> | undefined;
  private pending: EachBatchPayload | undefined;

  constructor(private readonly onError: (error: unknown) => void) {}

  /** Commits the resolved offsets soon; resolves once a commit that includes them has been tried. */
  request(payload: EachBatchPayload): Promise<void> {
    this.pending = payload;
    // The run starts a microtask later, once inFlight holds its promise: a run with nothing to
    // commit used to end (and clear inFlight) before `??=` stored it, leaving a settled promise
    // behind for good (settled() then spun on it). It clears inFlight in the same step as its
    // last look at `pending`, so no request falls between the two.
    this.inFlight ??= Promise.resolve().then(() => this.run());
    return this.inFlight;
  }

  /** Resolves when no commit is in flight or waiting. */
  async settled(): Promise<void> {
    while (this.inFlight) await this.inFlight;
  }

  private async run(): Promise<void> {
    try {
      while (this.pending) {
        const payload = this.pending;
        this.pending = undefined;
        const offsets = payload.uncommittedOffsets();
        if (offsets.topics.length === 0) continue;
        try {
          await payload.commitOffsetsIfNecessary(offsets);
        } catch (error) {
          this.onError(error);
        }
      }
    } finally {
      this.inFlight = undefined;
    }
  }
}

/** First deliveries applied together in one transaction. */
const CHUNK_SIZE = 100;

/** A node-postgres transaction's pool client (drizzle keeps it in the session), if it can be told. */
interface TransactionClient {
  processID: number;
  release(error?: Error | boolean): void;
}
/** What names a handler's transaction: its backend, when it began, and the release of its pool checkout. */
interface HandlerTransaction {
  pid: number;
  began: string;
  release(error?: Error | boolean): void;
}
function transactionClient(tx: Executor): TransactionClient | undefined {
  const client = (tx as unknown as { session?: { client?: Partial<TransactionClient> } }).session?.client;
  return typeof client?.processID === 'number' && typeof client.release === 'function' ? (client as TransactionClient) : undefined;
}

/**
 * Runs one consumer group over its topics and its own retry topics.
 *
 * For each record: validate the envelope and payload against the contract; in one database
 * transaction, record the event id in processed_events (a redelivery finds it and changes
 * nothing) and apply the handler; only then is the offset resolved and committed. A handler
 * that throws sends the record to `<topic>.retry.<group>` with the next attempt number and a
 * not-before time (exponential backoff), and the partition goes on; after the last attempt the
 * record is parked on `<topic>.dlq.<group>` with the error. An invalid record goes to the
 * dead-letter topic at once. A record passed on to a retry or dead-letter topic is marked as such
 * (see forwardingMarker), so a redelivery after a lost offset commit does not pass it on again.
 * Heartbeats continue while a handler runs, so a slow handler
 * never costs the group a rebalance.
 *
 * If Kafka is away the consumer keeps retrying its connection in the background; it never
 * throws into the process.
 */
export class EventConsumer {
  private consumer: Consumer | undefined;
  private running = false;
  private supervisor: Promise<void> | undefined;
  /** Per partition (`topic/partition`), the last pause for a database that was away. */
  private readonly databaseBackoff = new Map<string, number>();
  private stopWaiting: (() => void) | undefined;
  /** Timers that resume a retry partition paused until its next record is due. */
  private readonly resumeTimers = new Set<NodeJS.Timeout>();
  /** The deadlines of the handlers running now: stop() aborts them. */
  private readonly deadlines = new Set<AbortController>();
  /** Called when the last handler running has ended (stop() calls, however many, wait for it). */
  private readonly handlersEnded: Array<() => void> = [];
  /** Counts start() calls: a supervisor loop runs while it is the latest (see start()). */
  private generation = 0;
  private healthy = false;
  private lastErrorValue: string | undefined;
  private readonly retry: RetryPolicy;
  private readonly commits: OffsetCommitter;
  /** Group joins and crashes seen, for tests and diagnostics. */
  readonly stats = { joins: 0, crashes: 0 };

  constructor(private readonly options: EventConsumerOptions) {
    this.retry = {
      attempts: options.retry?.attempts ?? 5,
      initialDelayMs: options.retry?.initialDelayMs ?? 1000,
      maxDelayMs: options.retry?.maxDelayMs ?? 60_000,
    };
    this.commits = new OffsetCommitter((error) =>
      options.logger.debug({ err: error, group: options.group }, 'offset commit failed; the next one carries these offsets too'),
    );
  }

  /** True while the group member is joined and fetching. */
  get isHealthy(): boolean {
    return this.healthy;
  }
  get lastError(): string | undefined {
    return this.lastErrorValue;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    // A stop() that returned at its timeout may have left the last loop leaving its group: that
    // loop ends once it has (it is not the latest), and the new one starts after it.
    const generation = ++this.generation;
    const previous = this.supervisor ?? Promise.resolve();
    this.supervisor = previous.then(() => this.supervise(generation));
  }

  /**
   * Stops fetching, lets the handlers in flight end (see withinDeadline), commits what was resolved
   * and leaves the group: waited for up to `stopTimeoutMs`, after which the leave goes on behind.
   */
  async stop(): Promise<void> {
    this.running = false;
    for (const timer of this.resumeTimers) clearTimeout(timer);
    this.resumeTimers.clear();
    // Handlers in flight end now if they pass their signal on, else 5 s from now (see withinDeadline).
    for (const deadline of this.deadlines) deadline.abort(new ConsumerStopping());
    this.stopWaiting?.();
    const supervisor = this.supervisor;
    if (!supervisor) return;
    // Not bounded by the timeout: a handler left behind has its connection ended through the
    // pool (see withinDeadline), which must still be open then.
    if (this.deadlines.size > 0) await new Promise<void>((resolve) => this.handlersEnded.push(resolve));
    const timeoutMs = this.options.stopTimeoutMs ?? Math.min(this.options.sessionTimeoutMs ?? 30_000, 10_000);
    let timer: NodeJS.Timeout | undefined;
    const left = await Promise.race([
      supervisor.then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]).finally(() => clearTimeout(timer));
    if (!left) {
      this.options.logger.warn(
        { group: this.options.group, timeoutMs },
        'the consumer did not leave its group in time (a rebalance under way, or the coordinator slow): the shutdown goes on, the leave finishes behind it',
      );
    }
  }

  /**
   * Keeps one kafkajs consumer running; replaces it when it crashes. Only this loop starts and
   * disconnects consumers (stop() asks it to): a kafkajs consumer disconnected while run() is still
   * joining its group goes on to join and fetch with nothing left to stop it, and so does one
   * kafkajs restarts by itself after a crash that came with the disconnect. So kafkajs never
   * restarts a consumer here (restartOnFailure), and a stop during a start waits for run() to
   * return before it disconnects.
   */
  private async supervise(generation: number): Promise<void> {
    let backoff = 500;
    const current = () => this.running && generation === this.generation;
    while (current()) {
      const consumer = this.createConsumer();
      this.consumer = consumer;
      const crashed = new Promise<void>((resolve) => {
        this.stopWaiting = resolve;
        // Reset once a consumer has joined: one that crashes before it joins waits longer each time.
        consumer.on(consumer.events.GROUP_JOIN, () => (backoff = 500));
        consumer.on(consumer.events.CRASH, (event) => {
          this.stats.crashes += 1;
          this.healthy = false;
          this.lastErrorValue = event.payload.error.message;
          resolve();
        });
      });
      try {
        await consumer.connect();
        if (current()) {
          const topics = this.options.topics.flatMap((t) => [t, retryTopic(t, this.options.group)]);
          await consumer.subscribe({ topics, fromBeginning: this.options.fromBeginning ?? true });
        }
        if (current()) {
          await consumer.run({
            // Offsets are committed by this.commits, off the batch path (see OffsetCommitter).
            autoCommit: false,
            eachBatchAutoResolve: false,
            partitionsConsumedConcurrently: this.options.partitionsConsumedConcurrently ?? 4,
            eachBatch: (payload) => this.eachBatch(payload),
          });
          await crashed;
        }
      } catch (error) {
        this.healthy = false;
        this.lastErrorValue = error instanceof Error ? error.message : String(error);
        this.options.logger.warn({ err: error, group: this.options.group }, 'consumer could not start; retrying');
      }
      // A stopping consumer commits what it resolved before it leaves the group.
      if (!current()) await this.commits.settled();
      await consumer.disconnect().catch(() => undefined);
      if (!current()) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, backoff);
        this.stopWaiting = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      backoff = Math.min(backoff * 2, 10_000);
    }
    this.healthy = false;
  }

  private createConsumer(): Consumer {
    const sessionTimeout = this.options.sessionTimeoutMs ?? 30_000;
    const consumer = this.options.kafka.consumer({
      groupId: this.options.group,
      sessionTimeout,
      heartbeatInterval: this.options.heartbeatIntervalMs ?? Math.max(100, Math.floor(sessionTimeout / 10)),
      rebalanceTimeout: Math.max(sessionTimeout * 2, 10_000),
      maxWaitTimeInMs: this.options.maxWaitTimeMs ?? 1000,
      allowAutoTopicCreation: false,
      // The supervisor replaces a crashed consumer (see supervise).
      retry: { retries: 5, initialRetryTime: 300, maxRetryTime: 5000, restartOnFailure: async () => false },
    });
    consumer.on(consumer.events.GROUP_JOIN, () => {
      this.stats.joins += 1;
      this.healthy = true;
      this.lastErrorValue = undefined;
    });
    consumer.on(consumer.events.FETCH, () => {
      this.healthy = true;
    });
    return consumer;
  }

  private async eachBatch(payload: EachBatchPayload): Promise<void> {
    const { batch, resolveOffset, isRunning, isStale, pause } = payload;
    const group = this.options.group;
    const messages = batch.messages;
    // A heartbeat that finds the group rebalancing (or this member no longer in it) ends the batch
    // after the record in hand: the group waits for every member to rejoin, so going on through
    // the batch would hold the whole group (and the members joining it) until the batch is done.
    let leaving = false;
    const heartbeat = async (): Promise<void> => {
      try {
        await payload.heartbeat();
      } catch (error) {
        if (REJOIN_ERRORS.has((error as { type?: string }).type ?? '')) leaving = true;
        // Anything else (a broker briefly away): the next beat tries again.
      }
    };
    let i = 0;
    while (i < messages.length) {
      if (!isRunning() || isStale() || leaving) break;
      const first = messages[i]!;
      const notBefore = Number(header(first.headers, RETRY_HEADERS.notBefore) ?? 0);
      if (notBefore > 0) {
        // A retry record not yet due: its partition pauses until then, the record unresolved
        // (fetched again on resume). Waiting here instead held up every other partition: kafkajs
        // fetches again only once every batch of the last fetch is done, so new events waited
        // out the whole backoff too.
        if (notBefore > Date.now()) {
          this.pauseFor(pause, notBefore - Date.now());
          break;
        }
        // Due: applied on its own.
        if (!(await this.processOrPause(batch.topic, batch.partition, first, heartbeat, pause))) break;
        resolveOffset(first.offset);
        i += 1;
        continue;
      }
      // With applyInRuns, a run of first deliveries is applied in one transaction; if anything in
      // it fails, the run is rolled back and replayed record by record, so only the failing
      // record is retried.
      let end = i + 1;
      while (end < messages.length && end - i < CHUNK_SIZE && header(messages[end]!.headers, RETRY_HEADERS.notBefore) === undefined) end += 1;
      const run = messages.slice(i, end);
      if (!this.options.applyInRuns || run.length === 1 || !(await this.applyRun(batch.topic, batch.partition, run, heartbeat))) {
        let paused = false;
        for (const message of run) {
          if (leaving || !isRunning()) break;
          if (!(await this.processOrPause(batch.topic, batch.partition, message, heartbeat, pause))) {
            paused = true;
            break;
          }
          resolveOffset(message.offset);
        }
        if (paused) break;
      } else {
        resolveOffset(run[run.length - 1]!.offset);
      }
      i = end;
      await heartbeat();
    }
    // A stopping consumer commits what it resolved before it leaves the group; otherwise the
    // commit is made in the background, one request at a time for every partition.
    if (isRunning()) this.commits.request(payload);
    else await this.commits.request(payload);
    const lag = Number(batch.offsetLag());
    if (Number.isFinite(lag)) this.options.metrics?.lag.set({ group, topic: batch.topic, partition: String(batch.partition) }, lag);
  }

  private async runAfterCommit(after: Array<() => void | Promise<void>>): Promise<void> {
    for (const fn of after) {
      try {
        await fn();
      } catch (error) {
        this.options.logger.warn({ err: error, group: this.options.group }, 'an after-commit action failed');
      }
    }
  }

  /** Applies several first deliveries in one transaction; false if any of them needs the careful path. */
  private async applyRun(recordTopic: string, partition: number, run: KafkaMessage[], heartbeat: () => Promise<void>): Promise<boolean> {
    const group = this.options.group;
    const topic = recordTopic as Topic;
    const parsed: AnyEvent[] = [];
    for (const message of run) {
      try {
        parsed.push(parseEvent(message.value));
      } catch {
        return false; // dead-lettered individually on the careful path
      }
    }
    const wanted = parsed.filter((e) => this.options.handlers[e.type] !== undefined);
    const after: Array<() => void | Promise<void>> = [];
    const afterCommit = (fn: () => void | Promise<void>) => void after.push(fn);
    const started = performance.now();
    const beating = setInterval(() => void heartbeat().catch(() => undefined), 1000);
    // One span for the run: the first record's trace is its parent, the others are linked.
    const traced =
      wanted.length === 0
        ? undefined
        : startChildSpan(`process ${topic}`, {
            kind: SpanKind.CONSUMER,
            root: true,
            parent: recordContext(group, run[0]!),
            attributes: consumerSpanAttributes(group, topic, partition, run),
          });
    if (traced) {
      for (const message of run.slice(1)) {
        const linked = otelTrace.getSpanContext(recordContext(group, message));
        if (linked) traced.span.addLink({ context: linked });
      }
    }
    const inTrace = <T>(fn: () => Promise<T>): Promise<T> => (traced ? otelContext.with(traced.context, fn) : fn());
    try {
      const applied = wanted.length === 0 ? new Set<string>() : await inTrace(() => this.options.db.transaction(async (tx) => {
        const inserted = await tx
          .insert(this.options.processedEvents)
          .values(wanted.map((e) => ({ consumerGroup: group, eventId: e.id, topic })))
          .onConflictDoNothing()
          .returning({ eventId: this.options.processedEvents.eventId });
        const fresh = new Set(inserted.map((r) => r.eventId));
        const done = new Set<string>();
        after.length = 0;
        for (const event of wanted) {
          // The same event twice in one run: only its first copy is applied.
          if (!fresh.has(event.id) || done.has(event.id)) continue;
          done.add(event.id);
          const handler = this.options.handlers[event.type] as EventHandler;
          await handler(event, { tx, topic, partition, attempt: 1, afterCommit, signal: NO_DEADLINE });
        }
        return done;
      }));
      await inTrace(() => this.runAfterCommit(after));
      if (traced) endSpan(traced.span);
      const metrics = this.options.metrics;
      if (metrics) {
        const now = Date.now();
        metrics.consumed.inc({ group, topic, outcome: 'ignored' }, parsed.length - wanted.length);
        metrics.consumed.inc({ group, topic, outcome: 'handled' }, applied.size);
        metrics.consumed.inc({ group, topic, outcome: 'duplicate' }, wanted.length - applied.size);
        const each = (performance.now() - started) / 1000 / Math.max(1, wanted.length);
        for (const event of wanted) {
          metrics.handleDuration.observe({ group, topic }, each);
          const age = now - Date.parse(event.time);
          if (applied.has(event.id) && Number.isFinite(age)) metrics.endToEnd.observe({ group, topic }, Math.max(0, age) / 1000);
        }
      }
      return true;
    } catch (error) {
      if (traced) endSpan(traced.span, error);
      this.options.logger.debug({ err: error, group, topic, records: run.length }, 'a run of events failed; applying them one by one');
      return false;
    } finally {
      clearInterval(beating);
    }
  }

  /**
   * processRecord, except that a record the database could not take now pauses its partition
   * (growing pauses, up to 10 s, per partition) and stays unresolved: it is fetched again on resume.
   * False when it paused.
   */
  private async processOrPause(topic: string, partition: number, message: KafkaMessage, heartbeat: () => Promise<void>, pause: () => () => void): Promise<boolean> {
    const key = `${topic}/${partition}`;
    try {
      await this.processRecord(topic, partition, message, heartbeat);
      this.databaseBackoff.delete(key);
      return true;
    } catch (error) {
      if (!(error instanceof TriedLater)) throw error;
      if (!this.running) return false; // stopping: the record stays unresolved for the next member
      const delay = Math.min((this.databaseBackoff.get(key) ?? DATABASE_BACKOFF_MS / 2) * 2, DATABASE_BACKOFF_MAX_MS);
      this.databaseBackoff.set(key, delay);
      this.options.logger.warn(
        { err: error.reason, group: this.options.group, topic, partition, offset: message.offset, retryInMs: delay },
        error.what === 'apply'
          ? 'the database is away: the record is tried again in place'
          : 'the record could not be passed on to its retry or dead-letter topic: it is tried again in place',
      );
      this.pauseFor(pause, delay);
      return false;
    }
  }

  /** Pauses the batch's partition for `ms` (the timer is cleared by stop()). */
  private pauseFor(pause: () => () => void, ms: number): void {
    const resume = pause();
    const timer = setTimeout(() => {
      this.resumeTimers.delete(timer);
      resume();
    }, ms);
    this.resumeTimers.add(timer);
  }

  private async processRecord(recordTopic: string, partition: number, message: KafkaMessage, heartbeat: () => Promise<void>): Promise<void> {
    const group = this.options.group;
    const topic = (header(message.headers, RETRY_HEADERS.originalTopic) ?? recordTopic) as Topic;
    const attempt = Number(header(message.headers, RETRY_HEADERS.attempt) ?? 1);
    const metrics = this.options.metrics;

    const marker = forwardingMarker(recordTopic, partition, message);
    let event: AnyEvent;
    try {
      event = parseEvent(message.value);
    } catch (error) {
      const reason = error instanceof UnknownEventTypeError ? 'unknown_type' : 'invalid';
      const detail =
        error instanceof EventValidationError
          ? error.issues.map((i) => `${i.path} ${i.message}`).join('; ')
          : error instanceof Error
            ? error.message
            : String(error);
      await this.forwarding(async () => {
        if (await this.wasForwarded(marker)) {
          metrics?.consumed.inc({ group, topic, outcome: 'duplicate' });
          return;
        }
        await this.deadLetter(topic, partition, message, reason, detail);
        await this.markForwarded(marker, deadLetterTopic(topic, group));
      });
      return;
    }

    const handler = this.options.handlers[event.type] as EventHandler | undefined;
    if (!handler) {
      metrics?.consumed.inc({ group, topic, outcome: 'ignored' });
      return;
    }

    const started = performance.now();
    const after: Array<() => void | Promise<void>> = [];
    const afterCommit = (fn: () => void | Promise<void>) => void after.push(fn);
    // Heartbeats go on while the handler works, however long it takes.
    const beating = setInterval(() => void heartbeat().catch(() => undefined), 1000);
    const traced = startChildSpan(`process ${topic}`, {
      kind: SpanKind.CONSUMER,
      root: true,
      parent: recordContext(group, message),
      attributes: { ...consumerSpanAttributes(group, topic, partition, [message]), 'messaging.message.id': event.id, 'vivier.attempt': attempt },
    });
    const inTrace = <T>(fn: () => Promise<T>): Promise<T> => (traced ? otelContext.with(traced.context, fn) : fn());
    const deadline = new AbortController();
    this.deadlines.add(deadline);
    if (!this.running) deadline.abort(new ConsumerStopping());
    try {
      // The event id is recorded after the handler, not before: until a handler writes, its
      // transaction has no transaction id, so one that calls out for minutes (a provider, S3)
      // does not hold back every outbox relay of the cluster (they publish only rows older than
      // the oldest open transaction id). A copy applied meanwhile by another member (a rebalance
      // overlap) makes the insert find the id: this transaction is rolled back as a duplicate.
      const processed = this.options.processedEvents;
      const backend: { transaction?: HandlerTransaction } = {};
      const work = inTrace(() => this.options.db
        .transaction(async (tx) => {
          after.length = 0;
          // Applied already, or this very record was already passed on to a retry or dead-letter
          // topic. Also when this transaction began: with the connection's backend pid, what names
          // this very transaction should its handler be left behind (see endBackend).
          const [state] = await tx
            .select({ seen: sql<number>`count(*)::int`, began: sql<string>`now()::text` })
            .from(processed)
            .where(and(eq(processed.consumerGroup, group), inArray(processed.eventId, [event.id, marker])));
          const client = transactionClient(tx);
          if (client && state) backend.transaction = { pid: client.processID, began: state.began, release: client.release };
          if ((state?.seen ?? 0) > 0) return false;
          await handler(event, { tx, topic, partition, attempt, afterCommit, signal: deadline.signal });
          const inserted = await tx.insert(processed).values({ consumerGroup: group, eventId: event.id, topic }).onConflictDoNothing().returning({ eventId: processed.eventId });
          if (inserted.length === 0) throw new AppliedElsewhere();
          return true;
        })
        .catch((error: unknown) => {
          if (error instanceof AppliedElsewhere) return false;
          throw error;
        }));
      const applied = await this.withinDeadline(work, deadline, backend, { topic, eventId: event.id, type: event.type, attempt }, after);
      if (!applied) after.length = 0;
      await inTrace(() => this.runAfterCommit(after));
      if (traced) {
        traced.span.setAttribute('vivier.outcome', applied ? 'handled' : 'duplicate');
        endSpan(traced.span);
      }
      metrics?.consumed.inc({ group, topic, outcome: applied ? 'handled' : 'duplicate' });
      metrics?.handleDuration.observe({ group, topic }, (performance.now() - started) / 1000);
      const age = Date.now() - Date.parse(event.time);
      if (applied && Number.isFinite(age)) metrics?.endToEnd.observe({ group, topic }, Math.max(0, age) / 1000);
    } catch (error) {
      if (traced) endSpan(traced.span, error);
      // The database away is not the event's fault: the record waits, unresolved, and is tried
      // again in place (eachBatch), without spending an attempt or copying it to a retry topic.
      // Nor is a stop: the record stays unresolved for the member that takes the partition.
      if (isTransientDatabaseError(error) || deadline.signal.reason instanceof ConsumerStopping) throw new TriedLater(error);
      const detail = error instanceof Error ? error.message : String(error);
      await this.forwarding(() => this.forward(error, { topic, partition, message, marker, event, attempt, detail }));
    } finally {
      clearInterval(beating);
      this.deadlines.delete(deadline);
      if (this.deadlines.size === 0) for (const ended of this.handlersEnded.splice(0)) ended();
    }
  }

  /**
   * Runs `fn` (passing a record on to a retry or dead-letter topic, and marking it so); if Kafka or
   * the database fails it, the record is tried again in place (TriedLater: its partition pauses).
   * Thrown on, the error crashed the consumer: a new member, and a rebalance of the whole group.
   */
  private async forwarding(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (error) {
      throw new TriedLater(error, 'forward');
    }
  }

  /** Passes a record whose handler failed on: to its retry topic, or after the last attempt to its dead-letter topic. */
  private async forward(
    error: unknown,
    r: { topic: Topic; partition: number; message: KafkaMessage; marker: string; event: AnyEvent; attempt: number; detail: string },
  ): Promise<void> {
    const { topic, partition, message, marker, event, attempt, detail } = r;
    const group = this.options.group;
    const metrics = this.options.metrics;
    if (attempt < this.retry.attempts) {
      const delay = Math.min(this.retry.initialDelayMs * 2 ** (attempt - 1), this.retry.maxDelayMs);
      this.options.logger.warn({ err: error, group, topic, eventId: event.id, type: event.type, attempt, retryInMs: delay }, 'event handler failed; will retry');
      await this.sendOnward(retryTopic(topic, group), { topic, partition, message, detail }, {
        [RETRY_HEADERS.attempt]: String(attempt + 1),
        [RETRY_HEADERS.notBefore]: String(Date.now() + delay),
      });
      await this.markForwarded(marker, retryTopic(topic, group));
      metrics?.retries.inc({ group, topic });
      metrics?.consumed.inc({ group, topic, outcome: 'retried' });
    } else {
      this.options.logger.error({ err: error, group, topic, eventId: event.id, type: event.type, attempt }, 'event handler failed for the last time; dead-lettered');
      await this.deadLetter(topic, partition, message, 'handler_failed', detail);
      await this.markForwarded(marker, deadLetterTopic(topic, group));
    }
  }

  /**
   * `work` (a handler's transaction), unless it runs for `handlerTimeoutMs` or the consumer stops:
   * then its signal aborts (a handler that passes it on ends, and fails as any other), and one
   * still running HANDLER_ABORT_GRACE_MS later is left behind. Its transaction's connection is
   * ended (pg_terminate_backend) and handed back to the pool as broken, so it holds no lock and no
   * pool slot, and can never commit: the record is treated as failed (HandlerTimedOut) or, when
   * stopping, left unresolved (ConsumerStopping). If the connection could not be ended, a late
   * commit still stands (the retry then finds the event applied) and its after-commit actions run.
   */
  private async withinDeadline(
    work: Promise<boolean>,
    deadline: AbortController,
    backend: { transaction?: HandlerTransaction },
    what: { topic: Topic; eventId: string; type: string; attempt: number },
    after: Array<() => void | Promise<void>>,
  ): Promise<boolean> {
    const timeoutMs = this.options.handlerTimeoutMs ?? HANDLER_TIMEOUT_MS;
    const within = async (ms: number): Promise<boolean | typeof STILL_RUNNING> => {
      let timer: NodeJS.Timeout | undefined;
      let onAbort: (() => void) | undefined;
      try {
        return await Promise.race([
          work,
          new Promise<typeof STILL_RUNNING>((resolve) => {
            timer = setTimeout(() => resolve(STILL_RUNNING), ms);
            onAbort = () => resolve(STILL_RUNNING); // a stop (or the deadline itself) ends this wait
            deadline.signal.addEventListener('abort', onAbort);
          }),
        ]);
      } finally {
        clearTimeout(timer);
        if (onAbort) deadline.signal.removeEventListener('abort', onAbort);
      }
    };
    if (!deadline.signal.aborted) {
      const first = await within(timeoutMs);
      if (first !== STILL_RUNNING) return first;
    }
    const log = { group: this.options.group, ...what, timeoutMs };
    if (!deadline.signal.aborted) {
      this.options.logger.warn(log, 'event handler ran past its deadline: its signal is aborted');
      deadline.abort(new HandlerTimedOut(timeoutMs, 'aborted'));
    }
    const stopping = deadline.signal.reason instanceof ConsumerStopping;
    let timer: NodeJS.Timeout | undefined;
    const second = await Promise.race([work, new Promise<typeof STILL_RUNNING>((resolve) => (timer = setTimeout(() => resolve(STILL_RUNNING), HANDLER_ABORT_GRACE_MS)))]).finally(() => clearTimeout(timer));
    if (second !== STILL_RUNNING) return second;
    const leftAt = performance.now();
    let settled = false;
    void work.then(
      () => (settled = true),
      () => (settled = true),
    );
    const ended = backend.transaction !== undefined && (await this.endBackend(backend.transaction, () => settled));
    this.options.logger.error({ ...log, connectionEnded: ended }, 'event handler did not end when its signal aborted: it is left behind and its connection ended');
    work.then(
      (applied) => {
        this.options.logger.warn({ ...log, applied, lateByMs: Math.round(performance.now() - leftAt) }, 'an event handler left behind ended');
        if (applied) void this.runAfterCommit(after);
      },
      (error: unknown) => this.options.logger.warn({ ...log, err: error, lateByMs: Math.round(performance.now() - leftAt) }, 'an event handler left behind failed'),
    );
    throw stopping ? new ConsumerStopping() : new HandlerTimedOut(timeoutMs, 'left_behind');
  }

  /**
   * Ends a handler's transaction (it rolls back) by ending its connection, and hands its client
   * back to the pool as broken: the pool would otherwise count it as taken until the handler ends,
   * if ever. Only that very transaction is ended (backend pid and start time, as pg_stat_activity
   * has them): if it ended meanwhile and its connection serves someone else, nothing is done, and
   * the release function of the handler's own checkout is a no-op for the pool then (it throws).
   */
  private async endBackend(transaction: HandlerTransaction, settled: () => boolean): Promise<boolean> {
    let ended = false;
    try {
      const result = await this.options.db.transaction((tx) =>
        tx.execute(sql`select pg_terminate_backend(pid) as ended from pg_stat_activity where pid = ${transaction.pid} and xact_start = ${transaction.began}::timestamptz`),
      );
      ended = (result as unknown as { rows: Array<{ ended: boolean }> }).rows[0]?.ended === true;
    } catch (error) {
      this.options.logger.warn({ err: error, pid: transaction.pid }, 'could not end the connection of an event handler left behind');
      return false;
    }
    if (!ended || settled()) return ended;
    try {
      transaction.release(new Error('event handler left behind'));
    } catch {
      // released meanwhile: the handler ended after all
    }
    return true;
  }

  private async wasForwarded(marker: string): Promise<boolean> {
    const processed = this.options.processedEvents;
    return this.options.db.transaction(async (tx) => {
      const found = await tx
        .select({ eventId: processed.eventId })
        .from(processed)
        .where(and(eq(processed.consumerGroup, this.options.group), eq(processed.eventId, marker)));
      return found.length > 0;
    });
  }

  /**
   * Records that a record was passed on, once the retry or dead-letter record is written. A crash
   * between the two can still forward it twice; a lost offset commit no longer does.
   */
  private async markForwarded(marker: string, to: string): Promise<void> {
    await this.options.db.transaction((tx) =>
      tx.insert(this.options.processedEvents).values({ consumerGroup: this.options.group, eventId: marker, topic: to }).onConflictDoNothing(),
    );
  }

  /**
   * Writes a copy of a record to a retry or dead-letter topic, with its key, value and headers, and
   * where the event first arrived (kept through every retry, since the retry topic's place says
   * nothing) and why it failed, plus the topic's own headers.
   */
  private async sendOnward(
    to: string,
    from: { topic: Topic; partition: number; message: KafkaMessage; detail: string },
    headers: Record<string, string>,
  ): Promise<void> {
    const { topic, partition, message, detail } = from;
    await this.options.producer.send({
      topic: to,
      acks: -1,
      messages: [
        {
          key: message.key,
          value: message.value,
          headers: {
            ...message.headers,
            [RETRY_HEADERS.originalTopic]: topic,
            [RETRY_HEADERS.originalPartition]: header(message.headers, RETRY_HEADERS.originalPartition) ?? String(partition),
            [RETRY_HEADERS.originalOffset]: header(message.headers, RETRY_HEADERS.originalOffset) ?? message.offset,
            [RETRY_HEADERS.error]: detail.slice(0, 2000),
            ...headers,
          },
        },
      ],
    });
  }

  private async deadLetter(topic: Topic, partition: number, message: KafkaMessage, reason: string, detail: string): Promise<void> {
    const group = this.options.group;
    await this.sendOnward(deadLetterTopic(topic, group), { topic, partition, message, detail }, {
      [RETRY_HEADERS.reason]: reason,
      [RETRY_HEADERS.failedAt]: new Date().toISOString(),
    });
    this.options.metrics?.deadLetters.inc({ group, topic, reason });
    this.options.metrics?.consumed.inc({ group, topic, outcome: 'dead_lettered' });
    this.options.logger.warn({ group, topic, reason, detail: detail.slice(0, 500) }, 'event parked on the dead-letter topic');
  }
}
