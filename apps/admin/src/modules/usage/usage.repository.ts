import { sql, type SQL } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { LATENCY_BUCKET_COUNT, latencyBucketColumn } from '@vivier/db-admin';

/** The counters of one reply, in the order of METRIC_COLUMNS. */
export interface ReplyMetrics {
  messages: number;
  failures: number;
  cancelled: number;
  cacheHits: number;
  tokensIn: number;
  tokensOut: number;
  costMicros: number;
  latencySumMs: number;
  latencyCount: number;
  latencyMaxMs: number;
  /** Index of the latency bucket to count, or -1 when the reply's latency is not counted. */
  latencyBucket: number;
}

/** Sums of the counters over some aggregate rows. */
export interface UsageSums {
  messages: number;
  failures: number;
  cancelled: number;
  cacheHits: number;
  tokensIn: number;
  tokensOut: number;
  costMicros: number;
  latencySumMs: number;
  latencyCount: number;
  latencyMaxMs: number;
  latencyBuckets: number[];
}

const BUCKET_COLUMNS = Array.from({ length: LATENCY_BUCKET_COUNT }, (_, i) => latencyBucketColumn(i));
const METRIC_COLUMNS = [
  'messages',
  'failures',
  'cancelled',
  'cache_hits',
  'tokens_in',
  'tokens_out',
  'cost_micros',
  'latency_sum_ms',
  'latency_count',
  'latency_max_ms',
  ...BUCKET_COLUMNS,
];

const metricList = sql.raw(METRIC_COLUMNS.join(', '));
/** Sums of every counter (the maximum for latency_max_ms), as text-safe bigints. */
const metricSums = sql.raw(
  METRIC_COLUMNS.map((c) => (c === 'latency_max_ms' ? `coalesce(max(${c}), 0)::bigint as ${c}` : `coalesce(sum(${c}), 0)::bigint as ${c}`)).join(', '),
);

function metricValues(m: ReplyMetrics): SQL {
  const values = [m.messages, m.failures, m.cancelled, m.cacheHits, m.tokensIn, m.tokensOut, m.costMicros, m.latencySumMs, m.latencyCount, m.latencyMaxMs];
  for (let i = 0; i < LATENCY_BUCKET_COUNT; i++) values.push(i === m.latencyBucket ? 1 : 0);
  return sql.join(
    values.map((v) => sql`${v}`),
    sql`, `,
  );
}

const ZERO_METRICS = sql.join(
  METRIC_COLUMNS.map(() => sql`0`),
  sql`, `,
);

type SumRow = Record<string, string | number | null>;

/** One chat event's contribution: a chat (±1), a sent message, or a reply with its counters. */
export interface PendingRow {
  userId: string;
  at: Date | null;
  chats?: 1 | -1;
  sent?: 1;
  day?: string;
  provider?: string;
  model?: string;
  metrics?: ReplyMetrics;
}

/** The rows of a raw query's result (node-postgres). */
const rowsOf = (result: unknown): SumRow[] => (result as { rows: SumRow[] }).rows;

export function sumsOf(row: SumRow): UsageSums {
  const n = (c: string) => Number(row[c] ?? 0);
  return {
    messages: n('messages'),
    failures: n('failures'),
    cancelled: n('cancelled'),
    cacheHits: n('cache_hits'),
    tokensIn: n('tokens_in'),
    tokensOut: n('tokens_out'),
    costMicros: n('cost_micros'),
    latencySumMs: n('latency_sum_ms'),
    latencyCount: n('latency_count'),
    latencyMaxMs: n('latency_max_ms'),
    latencyBuckets: BUCKET_COLUMNS.map(n),
  };
}

export function addSums(into: UsageSums, more: UsageSums): UsageSums {
  return {
    messages: into.messages + more.messages,
    failures: into.failures + more.failures,
    cancelled: into.cancelled + more.cancelled,
    cacheHits: into.cacheHits + more.cacheHits,
    tokensIn: into.tokensIn + more.tokensIn,
    tokensOut: into.tokensOut + more.tokensOut,
    costMicros: into.costMicros + more.costMicros,
    latencySumMs: into.latencySumMs + more.latencySumMs,
    latencyCount: into.latencyCount + more.latencyCount,
    latencyMaxMs: Math.max(into.latencyMaxMs, more.latencyMaxMs),
    latencyBuckets: into.latencyBuckets.map((v, i) => v + (more.latencyBuckets[i] ?? 0)),
  };
}

export const emptySums = (): UsageSums => sumsOf({});

export type UsageSource =
  /** day × provider × model × user */
  | 'usage_daily'
  /** day × provider × model */
  | 'usage_daily_model'
  /** top users: whole months from usage_monthly_user, the days of partial months from usage_daily */
  | 'usage_monthly_user';

export type GroupBy = 'day' | 'provider' | 'model' | 'user';

export interface UsageFilter {
  from: string;
  to: string;
  userId?: string;
  provider?: string;
  model?: string;
}

export interface GroupRow {
  day?: string;
  provider?: string;
  model?: string;
  userId?: string;
  email?: string | null;
  name?: string | null;
  sums: UsageSums;
}

const GROUP_KEYS: Record<GroupBy, { select: string; group: string; order: string }> = {
  day: { select: `to_char(day, 'YYYY-MM-DD') as day`, group: 'day', order: 'day' },
  provider: { select: 'provider', group: 'provider', order: 'provider' },
  model: { select: 'provider, model', group: 'provider, model', order: 'provider, model' },
  user: { select: 'user_id', group: 'user_id', order: 'sum(tokens_in) + sum(tokens_out) desc, user_id' },
};

const dayRanges = (column: string, days: Array<[string, string]>): SQL =>
  sql.join(
    days.map(([a, b]) => sql`(${sql.raw(column)} between ${a} and ${b})`),
    sql` or `,
  );

function firstOfMonth(day: string): string {
  return `${day.slice(0, 7)}-01`;
}

function addDays(day: string, n: number): string {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

function addMonths(month: string, n: number): string {
  const d = new Date(`${month}T00:00:00Z`);
  d.setUTCMonth(d.getUTCMonth() + n);
  return d.toISOString().slice(0, 10);
}

/**
 * Splits [from, to] (inclusive UTC days) into the whole calendar months inside it and the days
 * before and after them.
 */
export function splitByMonths(from: string, to: string): { months?: [string, string]; days: Array<[string, string]> } {
  const firstWhole = from.endsWith('-01') ? from : addMonths(firstOfMonth(from), 1);
  const afterLastWhole = firstOfMonth(addDays(to, 1)); // the month after the last whole one
  if (firstWhole >= afterLastWhole) return { days: [[from, to]] };
  const days: Array<[string, string]> = [];
  if (from < firstWhole) days.push([from, addDays(firstWhole, -1)]);
  if (afterLastWhole <= to) days.push([afterLastWhole, to]);
  return { months: [firstWhole, addMonths(afterLastWhole, -1)], days };
}

/** Incremental aggregates of usage: written by the chat.events consumer, read by GET /usage. */
export function usageRepository(db: Executor) {
  return {
    /**
     * Records what a chat event adds; the transaction's pending rows are folded into the totals
     * and aggregates when it commits (trigger `usage_pending_fold`, migration 0003).
     */
    async addPending(row: PendingRow, tx: Executor = db): Promise<void> {
      const m = row.metrics;
      await tx.execute(sql`
        insert into admin.usage_pending (user_id, at, chats, sent, day, provider, model, ${metricList})
        values (${row.userId}, ${row.at?.toISOString() ?? null}, ${row.chats ?? 0}, ${row.sent ?? 0}, ${row.day ?? null}, ${row.provider ?? null}, ${row.model ?? null}, ${m ? metricValues(m) : ZERO_METRICS})
      `);
    },

    /** Which aggregate answers a query: the smallest one that has the needed grain. */
    sourceFor(groupBy: GroupBy, filter: UsageFilter): UsageSource {
      if (filter.userId) return 'usage_daily';
      if (groupBy === 'user') return filter.provider || filter.model ? 'usage_daily' : 'usage_monthly_user';
      return 'usage_daily_model';
    },

    /** Sums per group over [from, to] (inclusive days); groupBy `user` returns the top `limit` by tokens. */
    async groups(groupBy: GroupBy, filter: UsageFilter, limit: number): Promise<GroupRow[]> {
      const source = this.sourceFor(groupBy, filter);
      let query: SQL;
      if (source === 'usage_monthly_user') {
        query = topUsersQuery(filter, limit);
      } else {
        const key = GROUP_KEYS[groupBy];
        const limitSql = groupBy === 'user' ? sql` limit ${limit}` : sql``;
        query = sql`select ${sql.raw(key.select)}, ${metricSums} from ${sql.raw(`admin.${source}`)} where ${conditionsOf(source, filter)}
          group by ${sql.raw(key.group)} order by ${sql.raw(key.order)}${limitSql}`;
        if (groupBy === 'user') query = withUserNames(query);
      }
      const rows = await analytics(db, query);
      return rows.map((row) => ({
        ...(row.day === undefined ? {} : { day: String(row.day) }),
        ...(row.provider === undefined ? {} : { provider: String(row.provider) }),
        ...(row.model === undefined ? {} : { model: String(row.model) }),
        ...(row.user_id === undefined ? {} : { userId: String(row.user_id), email: (row.email as string | null) ?? null, name: (row.name as string | null) ?? null }),
        sums: sumsOf(row),
      }));
    },

    /** Sums over the whole filtered range. */
    async totals(filter: UsageFilter): Promise<UsageSums> {
      const source = filter.userId ? 'usage_daily' : 'usage_daily_model';
      const rows = await analytics(db, sql`select ${metricSums} from ${sql.raw(`admin.${source}`)} where ${conditionsOf(source, filter)}`);
      return sumsOf(rows[0] ?? {});
    },
  };
}

/**
 * Runs an analytics query with settings of its own: memory enough to aggregate 10,000 groups
 * without spilling to disk, and no JIT (compiling costs more than these queries take).
 */
async function analytics(db: Executor, query: SQL): Promise<SumRow[]> {
  return db.transaction(async (tx) => {
    await tx.execute(sql`select set_config('work_mem', '64MB', true), set_config('jit', 'off', true)`);
    return rowsOf(await tx.execute(query));
  });
}

function conditionsOf(source: 'usage_daily' | 'usage_daily_model', filter: UsageFilter): SQL {
  const conditions: SQL[] = [sql`day between ${filter.from} and ${filter.to}`];
  if (filter.provider) conditions.push(sql`provider = ${filter.provider}`);
  if (filter.model) conditions.push(sql`model = ${filter.model}`);
  if (filter.userId && source === 'usage_daily') conditions.push(sql`user_id = ${filter.userId}`);
  return sql.join(conditions, sql` and `);
}

/** Adds each user's email and name to rows grouped by user, keeping their order. */
function withUserNames(grouped: SQL): SQL {
  return sql`select g.*, u.email, u.name from (${grouped}) g left join admin.users u on u.id = g.user_id
    order by g.tokens_in + g.tokens_out desc, g.user_id`;
}

/**
 * The top users by tokens, in two steps so that a year of 10,000 users stays cheap: rank every
 * user by one sum (whole months from usage_monthly_user, the days of partial months from the
 * narrow usage_daily_user_tokens), then compute every counter for the top `limit` only (whole
 * months from usage_monthly_user, partial months from usage_daily), reached through the per-user
 * keys for a few users or by a hash join for many: the planner picks, knowing `limit`.
 */
function topUsersQuery(filter: UsageFilter, limit: number): SQL {
  const { months, days } = splitByMonths(filter.from, filter.to);
  const rankParts: SQL[] = [];
  const detailParts: SQL[] = [];
  if (months) {
    rankParts.push(sql`select user_id, tokens_in + tokens_out as tokens from admin.usage_monthly_user where month between ${months[0]} and ${months[1]}`);
    detailParts.push(
      sql`select user_id, ${metricList} from admin.usage_monthly_user where month between ${months[0]} and ${months[1]} and user_id in (select user_id from ranked)`,
    );
  }
  if (days.length > 0) {
    rankParts.push(sql`select user_id, tokens from admin.usage_daily_user_tokens where ${dayRanges('day', days)}`);
    // One part per range, so that (user_id, day) bounds each index scan.
    for (const [a, b] of days) {
      detailParts.push(sql`select user_id, ${metricList} from admin.usage_daily where day between ${a} and ${b} and user_id in (select user_id from ranked)`);
    }
  }
  return sql`
    with ranked as materialized (
      select user_id, sum(tokens) as tokens from (${sql.join(rankParts, sql` union all `)}) p
      group by user_id order by sum(tokens) desc, user_id limit ${limit}
    ), detail as (
      select user_id, ${metricSums} from (${sql.join(detailParts, sql` union all `)}) x group by user_id
    )
    select d.*, u.email, u.name
    from ranked r
    join detail d on d.user_id = r.user_id
    left join admin.users u on u.id = r.user_id
    order by r.tokens desc, r.user_id`;
}
