import type pg from 'pg';
import { sql, type SQL } from 'drizzle-orm';
import type { AnyEvent } from '@vivier/contracts';
import { outboxRecords, type Executor } from '@vivier/messaging';
import type { MessageStatus } from '@vivier/db-chat';
import type { HistoryRow, MessageRow, NewMessageRow, ReplyOutcome } from './messages.repository';
import type { ChatRow } from '../chats/chats.repository';
import type { ChatSummary } from '../context/context.service';

// The statements of a chat turn, each one round trip. A turn is the hot path of the service
// (the benchmark asks for hundreds per second on two shared cores, and every round trip to
// PostgreSQL is a few syscalls), so each of its writes is ONE statement whose data-modifying CTEs
// do what would otherwise be a transaction of four: one statement is atomic on its own.
// They run as named prepared statements on the pool (parsed and planned once per connection),
// or inside a caller's drizzle transaction (consumers, the sweeper).

/** Runs one SQL text with $n parameters; `name` makes it a prepared statement where that is possible. */
export interface SqlRunner {
  rows<T>(name: string, text: string, values: unknown[]): Promise<T[]>;
}

export function poolRunner(pool: pg.Pool): SqlRunner {
  return {
    async rows<T>(name: string, text: string, values: unknown[]) {
      return (await pool.query({ name, text, values })).rows as T[];
    },
  };
}

/** The same statements inside a drizzle transaction (no statement names there). */
export function executorRunner(executor: Executor): SqlRunner {
  return {
    async rows<T>(_name: string, text: string, values: unknown[]) {
      const chunks: SQL[] = [];
      // sql.param: an array stays one parameter (a bare `${array}` would become a list).
      text.split(/\$(\d+)/).forEach((part, i) => chunks.push(i % 2 === 0 ? sql.raw(part) : sql`${sql.param(values[Number(part) - 1])}`));
      const result = (await executor.execute(sql.join(chunks))) as unknown as { rows: T[] };
      return result.rows;
    },
  };
}

/** drizzle's own queries read timestamps as strings; the pool gives Dates. Rows leave here with Dates. */
function withDates<T extends { createdAt: Date | string; completedAt?: Date | string | null }>(row: T): T {
  if (typeof row.createdAt === 'string') row.createdAt = new Date(row.createdAt);
  if (typeof row.completedAt === 'string') row.completedAt = new Date(row.completedAt);
  return row;
}

/** Every column of a message but the tsvector, in the row's (camelCase) shape. */
const MESSAGE_COLUMNS = `id, chat_id as "chatId", user_id as "userId", role, content, status, reply_to as "replyTo", model, provider,
  prompt_tokens as "promptTokens", completion_tokens as "completionTokens", context_tokens as "contextTokens",
  latency_ms as "latencyMs", time_to_first_token_ms as "timeToFirstTokenMs", cached, error_code as "errorCode",
  error_detail as "errorDetail", attachments, delta_ends as "deltaEnds", quota_reserved as "quotaReserved", params,
  created_at as "createdAt", completed_at as "completedAt"`;

const INSERTED_COLUMNS =
  'id, chat_id, user_id, role, content, status, reply_to, model, provider, context_tokens, cached, attachments, quota_reserved, params, created_at, completed_at';

/** The outbox rows of events, as @vivier/messaging's `publish` writes them (trace context included). */
function outboxJson(events: AnyEvent[]): string {
  return JSON.stringify(outboxRecords(events).map((r) => ({ event_id: r.eventId, topic: r.topic, key: r.key, envelope: r.envelope, headers: r.headers })));
}

const OUTBOX_INSERT = (param: string, guard: string) => `
  insert into chat.outbox (event_id, topic, key, envelope, headers)
  select e.event_id, e.topic, e.key, e.envelope, e.headers
  from jsonb_to_recordset(${param}::jsonb) as e(event_id uuid, topic text, key text, envelope jsonb, headers jsonb)
  where exists (select 1 from ${guard})`;

/**
 * Reserves `$3` tokens for user `$1` in month `$2` if `used + reserved + $3` stays within the user's
 * quota (or there is none): one statement, so concurrent sends cannot both squeeze through the last
 * tokens (the conflicting row is locked and re-checked). One row back when granted, with the
 * tokens still left after it (`headroom`, null without a limit); none when refused.
 */
const RESERVE_QUOTA = `
  insert into chat.quota_usage as u (user_id, month, reserved, used)
  select $1::uuid, $2::date, $3::bigint, 0
  where not exists (select 1 from chat.quotas q where q.user_id = $1::uuid and q.monthly_tokens is not null and q.monthly_tokens < $3::bigint)
  on conflict (user_id, month) do update set reserved = u.reserved + excluded.reserved
  where not exists (select 1 from chat.quotas q where q.user_id = u.user_id and q.monthly_tokens is not null
                    and u.used + u.reserved + excluded.reserved > q.monthly_tokens)
  returning (select q.monthly_tokens - u.used - u.reserved from chat.quotas q where q.user_id = u.user_id) as headroom`;

/**
 * RESERVE_QUOTA for the OpenAI-compatible API, on behalf of holder `$4` (a chat instance, see
 * quota_holds): what is reserved is also added to that holder's hold, in the same statement,
 * after the quota row is locked. One row back when granted (`headroom`), none when refused.
 */
const RESERVE_HELD = `
with reserve as (${RESERVE_QUOTA}
), held as (
  insert into chat.quota_holds as h (holder, user_id, month, tokens)
  select $4::uuid, $1::uuid, $2::date, $3::bigint from reserve
  on conflict (holder, user_id, month) do update set tokens = h.tokens + excluded.tokens
)
select headroom from reserve`;

/**
 * Reserves quota and, only if that succeeded, stores the turn: its messages, its events, and the
 * chat's `updated_at`. `$1` user, `$2` month, `$3` tokens to reserve, `$4` messages (jsonb), `$5`
 * outbox rows (jsonb), `$6` chat id, `$7` time. No rows back: the quota refused it.
 */
const INSERT_TURN = `
with reserve as (${RESERVE_QUOTA}
), turn as (
  insert into chat.messages (${INSERTED_COLUMNS})
  select ${INSERTED_COLUMNS} from jsonb_populate_recordset(null::chat.messages, $4::jsonb)
  where exists (select 1 from reserve)
  returning ${MESSAGE_COLUMNS}
), events as (${OUTBOX_INSERT('$5', 'reserve')}
), touch as (
  update chat.chats set updated_at = greatest(updated_at, $7::timestamptz) where id = $6::uuid and exists (select 1 from reserve)
)
select * from turn order by "createdAt", id`;

function messageJson(row: NewMessageRow): Record<string, unknown> {
  return {
    id: row.id,
    chat_id: row.chatId,
    user_id: row.userId,
    role: row.role,
    content: row.content ?? '',
    status: row.status,
    reply_to: row.replyTo ?? null,
    model: row.model ?? null,
    provider: row.provider ?? null,
    context_tokens: row.contextTokens ?? 0,
    cached: row.cached ?? false,
    attachments: row.attachments ?? [],
    quota_reserved: row.quotaReserved ?? 0,
    params: row.params ?? null,
    created_at: row.createdAt.toISOString(),
    completed_at: row.completedAt ? row.completedAt.toISOString() : null,
  };
}

/**
 * Ends a reply still in one of the `$3` statuses: stores the outcome, moves its quota reservation
 * (`$4` tokens) to real usage (`$5`) in the month of `$6`, and writes its events (`$7`), in one
 * statement. No row back: it had already ended (or its chat is gone) and nothing was written.
 */
const END_REPLY = `
with done as (
  update chat.messages set content = $8, status = $9, provider = $10, model = $11, prompt_tokens = $12,
    completion_tokens = $13, context_tokens = $14, latency_ms = $15, time_to_first_token_ms = $16, cached = $17,
    error_code = $18, error_detail = $19, delta_ends = $20::int[], completed_at = $21::timestamptz, quota_reserved = 0
  where id = $1::uuid and created_at = $2::timestamptz and status = any($3::text[])
  returning ${MESSAGE_COLUMNS}
), settle as (
  insert into chat.quota_usage as u (user_id, month, reserved, used)
  select "userId", $6::date, 0, $5::bigint from done
  on conflict (user_id, month) do update set reserved = greatest(u.reserved - $4::bigint, 0), used = u.used + excluded.used
), events as (${OUTBOX_INSERT('$7', 'done')}
)
select * from done`;

/**
 * Settles many reservations and writes their events, in one statement: `$1` the settlements, one
 * per (holder, user, month), as jsonb `[{user_id, month, holder, reserved, used}]`, where `holder`
 * is the holder the reservations were made under (see quota_holds), or null for reservations held
 * by a message; `$2` the outbox rows. The quota rows are locked in key order first, so two
 * instances settling overlapping users cannot deadlock; a holder's hold is locked only after its
 * quota row. With a holder, a settlement gives back at most what that holder's hold still holds:
 * none once the holds were given back for it (the sweeper judged the instance dead), so nothing is
 * given back twice, and never what the instance holds under the id it took since. A row that is
 * missing (never, after a reservation) is created with the usage alone.
 */
const SETTLE_AND_PUBLISH = `
with s as (
  select * from jsonb_to_recordset($1::jsonb) as s(user_id uuid, month date, holder uuid, reserved bigint, used bigint)
), locked as (
  select u.user_id, u.month from chat.quota_usage u
  where exists (select 1 from s where s.user_id = u.user_id and s.month = u.month)
  order by u.user_id, u.month for update of u
), held as (
  select h.holder, h.user_id, h.month, least(h.tokens, s.reserved) as released
  from chat.quota_holds h join locked l on l.user_id = h.user_id and l.month = h.month
  join s on s.holder = h.holder and s.user_id = h.user_id and s.month = h.month
  for update of h
), unheld as (
  update chat.quota_holds h set tokens = h.tokens - d.released
  from held d where h.holder = d.holder and h.user_id = d.user_id and h.month = d.month
), totals as (
  select s.user_id, s.month, sum(s.used)::bigint as used,
         sum(case when s.holder is null then s.reserved else coalesce(d.released, 0) end)::bigint as released
  from s left join held d on d.holder = s.holder and d.user_id = s.user_id and d.month = s.month
  group by s.user_id, s.month
), settled as (
  update chat.quota_usage u
  set reserved = greatest(u.reserved - t.released, 0), used = u.used + t.used
  from locked l join totals t on t.user_id = l.user_id and t.month = l.month
  where u.user_id = l.user_id and u.month = l.month
  returning 1
), created as (
  insert into chat.quota_usage (user_id, month, reserved, used)
  select t.user_id, t.month, 0, t.used from totals t where not exists (select 1 from locked l where l.user_id = t.user_id and l.month = t.month)
  on conflict (user_id, month) do update set used = chat.quota_usage.used + excluded.used
  returning 1
), events as (${OUTBOX_INSERT('$2', 's')}
)
select (select count(*) from settled)::int + (select count(*) from created)::int as settled`;

/** What a quota reservation answered: refused, or granted with the tokens left after it (null: no limit). */
export type Reservation = { granted: false } | { granted: true; headroom: number | null };

/** A reservation to settle: what was reserved, what was used, and the events that report it. */
export interface Settlement {
  userId: string;
  month: string;
  /** The quota holder the reservation was made under (QuotaHolders); absent for a message's reservation. */
  holder?: string;
  reserved: number;
  used: number;
  events: AnyEvent[];
}

/** The columns of a message in a context's history (see HistoryRow). */
export const HISTORY_COLUMNS = `id, role, content, status, reply_to as "replyTo", context_tokens as "contextTokens", attachments, created_at::text as "createdAt"`;

/**
 * The caller's chat and its newest `limit` messages in one statement: the chat as one row (history
 * columns null) and the messages, newest first, as the others (chat columns null); no row at all
 * when it is not the caller's chat or there is none. A UNION ALL of the two reads: its Append runs
 * the chat's branch, then the history's, each in its own order (the history's is all that matters:
 * the chat row is found by its id). Joining the two instead cost the server more per message than
 * reading the message itself: a lateral join, a window function and a CASE per chat column per
 * row (v2), and the chat columns again on every row before that (v1). The chat's row carries its
 * summary too, when it has one (v4). Times are text: the chat's
 * ISO (parsed once), the messages' PostgreSQL's own (only ever sent back as a read cursor).
 */
const CHAT_WITH_HISTORY = `
select c.id as c_id, c.user_id as c_user_id, c.title as c_title, c.model as c_model, c.system_prompt as c_system_prompt,
       c.archived as c_archived, to_json(c.created_at)#>>'{}' as c_created_at, to_json(c.updated_at)#>>'{}' as c_updated_at,
       s.summary as s_summary, s.tokens as s_tokens, s.through_id as s_through_id, to_json(s.through_at)#>>'{}' as s_through_at,
       null::uuid as id, null::text as role, null::text as content, null::text as status, null::uuid as "replyTo",
       null::int as "contextTokens", null::uuid[] as attachments, null::text as "createdAt"
  from chat.chats c left join chat.chat_summaries s on s.chat_id = c.id
 where c.id = $1::uuid and c.user_id = $2::uuid
union all (
select null, null, null, null, null, null, null, null, null, null, null, null, ${HISTORY_COLUMNS}
  from chat.messages
 where chat_id = $1::uuid and exists (select 1 from chat.chats where id = $1::uuid and user_id = $2::uuid)
 order by created_at desc, id desc
 limit $3)`;

interface ChatWithHistoryRow extends Partial<HistoryRow> {
  c_id: string | null;
  c_user_id: string;
  c_title: string | null;
  c_model: string;
  c_system_prompt: string | null;
  c_archived: boolean;
  c_created_at: string;
  c_updated_at: string;
  s_summary: string | null;
  s_tokens: number | null;
  s_through_id: string | null;
  s_through_at: string | null;
}

/** The summary columns of a row (null when the chat has none). */
function summaryOf(row: { s_summary: string | null; s_tokens: number | null; s_through_id: string | null; s_through_at: string | null }): ChatSummary | undefined {
  if (row.s_summary === null || row.s_through_id === null || row.s_through_at === null) return undefined;
  return { text: row.s_summary, tokens: row.s_tokens ?? 0, throughId: row.s_through_id, throughAt: new Date(row.s_through_at) };
}

export function turnsRepository(runner: SqlRunner) {
  return {
    /** See CHAT_WITH_HISTORY: what sending a message reads, in one round trip. */
    async chatWithHistory(userId: string, chatId: string, limit: number): Promise<{ chat: ChatRow; summary?: ChatSummary; history: HistoryRow[] } | undefined> {
      const rows = await runner.rows<ChatWithHistoryRow>('chat-with-history-v4', CHAT_WITH_HISTORY, [chatId, userId, limit]);
      const first = rows.find((r) => r.c_id !== null);
      if (!first) return undefined;
      const chat: ChatRow = {
        id: first.c_id!,
        userId: first.c_user_id,
        title: first.c_title,
        model: first.c_model,
        systemPrompt: first.c_system_prompt,
        archived: first.c_archived,
        createdAt: new Date(first.c_created_at),
        updatedAt: new Date(first.c_updated_at),
      };
      const history: HistoryRow[] = [];
      for (const row of rows) {
        if (row.id === null || row.id === undefined) continue;
        history.push({
          id: row.id,
          role: row.role!,
          content: row.content!,
          status: row.status!,
          replyTo: row.replyTo!,
          contextTokens: row.contextTokens!,
          attachments: row.attachments!,
          createdAt: row.createdAt!,
        });
      }
      const summary = summaryOf(first);
      return { chat, ...(summary ? { summary } : {}), history };
    },

    /** A chat's summary (chatWithHistory reads it with the chat; a regenerate reads it here). */
    async summary(chatId: string): Promise<ChatSummary | undefined> {
      const [row] = await runner.rows<Parameters<typeof summaryOf>[0]>(
        'chat-summary-v1',
        `select summary as s_summary, tokens as s_tokens, through_id as s_through_id, to_json(through_at)#>>'{}' as s_through_at
           from chat.chat_summaries where chat_id = $1::uuid`,
        [chatId],
      );
      return row && summaryOf(row);
    },

    /** The stored messages (user message first, when there is one), or undefined when the quota refused. */
    async insertTurn(input: {
      userId: string;
      month: string;
      reserve: number;
      rows: NewMessageRow[];
      events: AnyEvent[];
      chatId: string;
      at: Date;
    }): Promise<MessageRow[] | undefined> {
      const rows = await runner.rows<MessageRow>('chat-insert-turn-v1', INSERT_TURN, [
        input.userId,
        input.month,
        input.reserve,
        JSON.stringify(input.rows.map(messageJson)),
        outboxJson(input.events),
        input.chatId,
        input.at.toISOString(),
      ]);
      return rows.length > 0 ? rows.map(withDates) : undefined;
    },

    async endReply(input: {
      row: Pick<MessageRow, 'id' | 'createdAt'>;
      from: MessageStatus[];
      outcome: ReplyOutcome;
      reserved: number;
      used: number;
      month: string;
      events: AnyEvent[];
    }): Promise<MessageRow | undefined> {
      const o = input.outcome;
      const [row] = await runner.rows<MessageRow>('chat-end-reply-v1', END_REPLY, [
        input.row.id,
        input.row.createdAt.toISOString(),
        input.from,
        input.reserved,
        input.used,
        input.month,
        outboxJson(input.events),
        o.content,
        o.status,
        o.provider,
        o.model,
        o.promptTokens,
        o.completionTokens,
        o.contextTokens,
        o.latencyMs,
        o.timeToFirstTokenMs,
        o.cached,
        o.errorCode,
        o.errorDetail,
        o.deltaEnds,
        o.completedAt.toISOString(),
      ]);
      return row && withDates(row);
    },

    /** See RESERVE_HELD: reserves for the holder `holder`. */
    async reserveQuota(userId: string, month: string, tokens: number, holder: string): Promise<Reservation> {
      const [row] = await runner.rows<{ headroom: string | null }>('chat-reserve-held-v1', RESERVE_HELD, [userId, month, tokens, holder]);
      if (!row) return { granted: false };
      return { granted: true, headroom: row.headroom === null ? null : Number(row.headroom) };
    },

    /** See SETTLE_AND_PUBLISH; settlements of one (holder, user, month) are added up first. */
    async settleAndPublish(settlements: Settlement[]): Promise<void> {
      if (settlements.length === 0) return;
      const byKey = new Map<string, { user_id: string; month: string; holder: string | null; reserved: number; used: number }>();
      for (const s of settlements) {
        const key = `${s.holder ?? ''} ${s.userId} ${s.month}`;
        const sum = byKey.get(key);
        if (sum) {
          sum.reserved += s.reserved;
          sum.used += s.used;
        } else byKey.set(key, { user_id: s.userId, month: s.month, holder: s.holder ?? null, reserved: s.reserved, used: s.used });
      }
      await runner.rows('chat-settle-publish-v4', SETTLE_AND_PUBLISH, [JSON.stringify([...byKey.values()]), outboxJson(settlements.flatMap((s) => s.events))]);
    },

    /** A batch of history, newest first, strictly before `before` when given. */
    async historyBatch(chatId: string, before: { id: string; createdAt: Date | string } | undefined, limit: number): Promise<HistoryRow[]> {
      if (!before) {
        return runner.rows<HistoryRow>(
          'chat-history-v1',
          `select ${HISTORY_COLUMNS} from chat.messages where chat_id = $1::uuid order by created_at desc, id desc limit $2`,
          [chatId, limit],
        );
      }
      return runner.rows<HistoryRow>(
        'chat-history-before-v1',
        `select ${HISTORY_COLUMNS} from chat.messages
         where chat_id = $1::uuid and created_at <= $2::timestamptz and (created_at, id) < ($2::timestamptz, $3::uuid)
         order by created_at desc, id desc limit $4`,
        [chatId, typeof before.createdAt === 'string' ? before.createdAt : before.createdAt.toISOString(), before.id, limit],
      );
    },
  };
}

export type TurnsRepository = ReturnType<typeof turnsRepository>;
