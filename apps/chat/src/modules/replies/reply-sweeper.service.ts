import type { FastifyBaseLogger } from 'fastify';
import { sql } from 'drizzle-orm';
import { countTokens } from '@vivier/providers';
import type { ChatDatabase } from '../../database';
import { messagesRepository, type MessageRow, type ReplyOutcome } from '../messages/messages.repository';
import type { SqlRunner } from '../messages/turns.repository';
import { terminalEvent, type ReplyEvent } from './reply-events';
import type { ReplyRunner } from './reply-runner.service';
import { journalEnd, storeReplyEnd } from './reply-store';
import type { ReplyStreams } from './reply-streams.service';

/** How far back in-flight replies are looked for (older ones are long dead and stay as they are). */
const LOOKBACK_MS = 40 * 24 * 3600 * 1000;
const PARTITION_CHECK_MS = 6 * 3600 * 1000;

/**
 * Replies whose instance died must not stay `streaming` forever. Each running reply holds a
 * short lease in Redis that its instance renews; this sweeper (in every instance, at start and
 * every CHAT_SWEEP_INTERVAL_MS) fails the replies whose lease is gone, keeping the partial text
 * found in their Redis journal. The conditional update (`where status = 'streaming'`) makes
 * concurrent sweepers harmless. When Redis cannot answer it does nothing: a missing lease must
 * be seen, not assumed.
 *
 * It also keeps the monthly message partitions ahead (CHAT_PARTITION_MONTHS_AHEAD).
 */
export class ReplySweeper {
  private timer: NodeJS.Timeout | undefined;
  private lastPartitionCheck = 0;
  private sweeping: Promise<unknown> | undefined;
  private readonly messages;

  constructor(
    private readonly deps: {
      db: ChatDatabase;
      sql: SqlRunner;
      streams: ReplyStreams;
      runner: ReplyRunner;
      log: FastifyBaseLogger;
      leaseMs: number;
      intervalMs: number;
      partitionMonthsAhead: number;
    },
  ) {
    this.messages = messagesRepository(deps.db);
  }

  /**
   * Creates missing partitions now (inserts depend on them; the migrations made the current and
   * next month, so a database that does not answer yet is retried at the next tick), then sweeps
   * in the background.
   */
  async start(): Promise<void> {
    await this.ensurePartitions().catch((error: unknown) => this.deps.log.warn({ err: error }, 'cannot check the message partitions yet'));
    this.timer = setInterval(() => void this.tick(), this.deps.intervalMs);
    this.timer.unref();
    void this.tick();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.sweeping;
  }

  async ensurePartitions(): Promise<number> {
    const result = await this.deps.db.execute<{ created: number }>(
      sql`select chat.ensure_message_partitions(${this.deps.partitionMonthsAhead}::int) as created`,
    );
    this.lastPartitionCheck = Date.now();
    const created = Number(result.rows[0]?.created ?? 0);
    if (created > 0) this.deps.log.info({ created }, 'message partitions created');
    return created;
  }

  private async tick(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = (async () => {
      try {
        if (Date.now() - this.lastPartitionCheck > PARTITION_CHECK_MS) await this.ensurePartitions();
        await this.sweep();
      } catch (error) {
        this.deps.log.warn({ err: error }, 'reply sweep failed');
      }
    })();
    await this.sweeping;
    this.sweeping = undefined;
  }

  /** Fails the replies whose lease expired; returns how many. */
  async sweep(): Promise<number> {
    const now = Date.now();
    const candidates = (await this.messages.inFlight(new Date(now - this.deps.leaseMs), new Date(now - LOOKBACK_MS))).filter(
      (m) => !this.deps.runner.get(m.id),
    );
    if (candidates.length === 0) return 0;
    const alive = await this.deps.streams.leasesAlive(candidates.map((c) => c.id));
    let failed = 0;
    for (const [i, candidate] of candidates.entries()) {
      if (alive[i]) continue;
      const row = await this.messages.findById(candidate.id);
      if (!row || row.status !== 'streaming') continue;
      const ended = await this.finalizeOrphan(row, 'failed', { code: 'reply_lost', detail: 'The instance producing this reply stopped before it ended.' });
      if (ended) failed += 1;
    }
    if (failed > 0) this.deps.log.warn({ failed }, 'replies of a stopped instance marked failed');
    return failed;
  }

  /**
   * Ends a reply that no instance runs any more, from what its Redis journal holds: the text
   * streamed so far (and its usage, if it got that far). Used by the sweeper and by a cancel
   * whose reply has no live lease. Returns the stored row, or undefined if it had already ended.
   */
  async finalizeOrphan(row: MessageRow, status: 'failed' | 'cancelled', error?: { code: string; detail: string }): Promise<MessageRow | undefined> {
    const events = (await this.deps.streams.readAll(row.id)).sort((a, b) => a.seq - b.seq);
    let content = '';
    const deltaEnds: number[] = [];
    let usage: { promptTokens: number; completionTokens: number } | undefined;
    for (const event of events) {
      if (event.type === 'delta') {
        content += (event.data as { text: string }).text;
        deltaEnds.push(content.length);
      } else if (event.type === 'usage') {
        usage = event.data as { promptTokens: number; completionTokens: number };
      }
    }
    const ended = events.some((e) => e.type === 'done' || e.type === 'error');
    const replyTokens = await countTokens(content);
    // Text was generated but its usage never came (the instance died first): counted as the runner
    // counts a provider that reports none. The prompt is what was reserved less the maximum asked.
    const estimated = !usage && !ended && content.length > 0;
    if (estimated) usage = { promptTokens: Math.max(0, row.quotaReserved - (row.params?.maxTokens ?? row.quotaReserved)), completionTokens: replyTokens };
    const now = new Date();
    const outcome: ReplyOutcome = {
      content,
      status,
      provider: row.provider,
      model: row.model,
      promptTokens: usage?.promptTokens ?? null,
      completionTokens: usage?.completionTokens ?? null,
      contextTokens: replyTokens,
      latencyMs: Math.max(0, now.getTime() - row.createdAt.getTime()),
      timeToFirstTokenMs: null,
      cached: false,
      errorCode: status === 'failed' ? (error?.code ?? 'reply_lost') : null,
      errorDetail: status === 'failed' ? (error?.detail ?? '') : null,
      deltaEnds,
      completedAt: now,
    };
    const stored = await storeReplyEnd(this.deps.sql, row, outcome, ['streaming']);
    if (stored && !ended) {
      // The ids the database replay gives them, so Redis and the database agree.
      if (estimated && usage) {
        this.deps.streams.append({ seq: deltaEnds.length + 2, type: 'usage', data: usage, messageId: stored.id, chatId: stored.chatId }, stored.userId, false);
      }
      const end: ReplyEvent = { seq: deltaEnds.length + 2 + (usage ? 1 : 0), ...terminalEvent(stored) };
      this.deps.streams.append({ ...end, messageId: stored.id, chatId: stored.chatId }, stored.userId, true);
    }
    return stored;
  }

  /** Cancels a reply queued for the worker (its result, when it comes, is then ignored). */
  async finalizeQueued(row: MessageRow, now: Date): Promise<MessageRow | undefined> {
    const outcome: ReplyOutcome = {
      content: '',
      status: 'cancelled',
      provider: row.provider,
      model: row.model,
      promptTokens: null,
      completionTokens: null,
      contextTokens: 0,
      latencyMs: Math.max(0, now.getTime() - row.createdAt.getTime()),
      timeToFirstTokenMs: null,
      cached: false,
      errorCode: null,
      errorDetail: null,
      deltaEnds: [],
      completedAt: now,
    };
    const stored = await storeReplyEnd(this.deps.sql, row, outcome, ['queued']);
    if (stored) journalEnd(this.deps.streams, stored);
    return stored;
  }
}

