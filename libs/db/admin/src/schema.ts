import { sql } from 'drizzle-orm';
import {
  bigint,
  boolean,
  check,
  customType,
  date,
  index,
  integer,
  jsonb,
  pgSchema,
  primaryKey,
  text,
  timestamp,
  uuid,
  type PgColumnBuilderBase,
} from 'drizzle-orm/pg-core';
import { messagingTables } from '@vivier/messaging';

/** Everything the admin service stores lives in this PostgreSQL schema, owned by the admin_svc role. */
export const adminSchema = pgSchema('admin');

export const { outbox, processedEvents } = messagingTables(adminSchema);

const bytea = customType<{ data: Buffer; driverData: Buffer }>({ dataType: () => 'bytea' });

// --- users ------------------------------------------------------------------------------------

/**
 * The users as admin knows them, from `auth.events` (registration, profile and role updates,
 * sign-ins, MFA) and from this service's own changes (role, disabled), which are written here in
 * the transaction that publishes them on `admin.events`.
 */
export const users = adminSchema.table(
  'users',
  {
    id: uuid('id').primaryKey(),
    email: text('email').notNull(),
    name: text('name'),
    role: text('role').$type<'user' | 'admin'>().notNull().default('user'),
    status: text('status').$type<'active' | 'disabled'>().notNull().default('active'),
    mfaEnabled: boolean('mfa_enabled').notNull().default(false),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
    lastLoginAt: timestamp('last_login_at', { withTimezone: true }),
    disabledAt: timestamp('disabled_at', { withTimezone: true }),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    // Newest-first pages.
    index('users_created_at_id_idx').on(t.createdAt, t.id),
    // Case-insensitive prefix search on the email, its domain and the name (`like 'ann%'`); the
    // list's `q` uses exactly these expressions. (Substring search would need pg_trgm, which the
    // service role cannot install: see apps/admin/README.md.)
    index('users_email_lower_idx').using('btree', sql`lower(${t.email}) text_pattern_ops`),
    index('users_email_domain_idx').using('btree', sql`lower(split_part(${t.email}, '@', 2)) text_pattern_ops`),
    index('users_name_lower_idx').using('btree', sql`lower(${t.name}) text_pattern_ops`),
    // The last-admin check counts these.
    index('users_active_admins_idx').on(t.id).where(sql`${t.role} = 'admin' and ${t.status} = 'active'`),
    check('users_role_check', sql`${t.role} in ('user', 'admin')`),
    check('users_status_check', sql`${t.status} in ('active', 'disabled')`),
  ],
);

/**
 * Per-user activity from `chat.events`, kept apart from `users` so that chat traffic and auth
 * traffic never lock the same rows. `chats` is the number of chats the user has now (created −
 * deleted; read as at least 0); `messages` (sent and replies) and tokens are lifetime totals:
 * deleting a chat does not undo usage. A row may exist before the user's registration has
 * arrived (other topic).
 */
export const userTotals = adminSchema.table('user_totals', {
  userId: uuid('user_id').primaryKey(),
  chats: integer('chats').notNull().default(0),
  messages: bigint('messages', { mode: 'number' }).notNull().default(0),
  tokensIn: bigint('tokens_in', { mode: 'number' }).notNull().default(0),
  tokensOut: bigint('tokens_out', { mode: 'number' }).notNull().default(0),
  lastActiveAt: timestamp('last_active_at', { withTimezone: true }),
});

/** Monthly token quotas set by administrators (null: unlimited); chat enforces them. */
export const quotas = adminSchema.table('quotas', {
  userId: uuid('user_id').primaryKey(),
  monthlyTokens: bigint('monthly_tokens', { mode: 'number' }),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  updatedBy: uuid('updated_by').notNull(),
});

// --- usage --------------------------------------------------------------------------------------

/**
 * Upper bounds (ms, inclusive) of the reply latency histogram; a last bucket takes everything
 * above. Changing them changes the meaning of stored counts: that is a new set of columns.
 */
export const LATENCY_BUCKETS_MS = [
  100, 250, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 7500, 10_000, 15_000, 20_000, 30_000, 45_000, 60_000, 120_000, 300_000,
] as const;

/** Number of histogram columns: one per bound, plus the overflow bucket. */
export const LATENCY_BUCKET_COUNT = LATENCY_BUCKETS_MS.length + 1;

export const latencyBucketColumn = (i: number) => `latency_bucket_${String(i).padStart(2, '0')}`;

/**
 * The counters every usage aggregate has. All are sums of the replies (`chat.message.completed`)
 * folded into the row, except `latency_max_ms` (a maximum). Latency counts completed replies that
 * did not come from the cache (the provider's latency); cost is the price table's, in USD
 * micro-units, and 0 for cache hits (no provider call).
 */
function usageMetrics() {
  const buckets: Record<string, PgColumnBuilderBase> = {};
  for (let i = 0; i < LATENCY_BUCKET_COUNT; i++) buckets[`latencyBucket${i}`] = integer(latencyBucketColumn(i)).notNull().default(0);
  return {
    messages: integer('messages').notNull().default(0),
    failures: integer('failures').notNull().default(0),
    cancelled: integer('cancelled').notNull().default(0),
    cacheHits: integer('cache_hits').notNull().default(0),
    tokensIn: bigint('tokens_in', { mode: 'number' }).notNull().default(0),
    tokensOut: bigint('tokens_out', { mode: 'number' }).notNull().default(0),
    costMicros: bigint('cost_micros', { mode: 'number' }).notNull().default(0),
    latencySumMs: bigint('latency_sum_ms', { mode: 'number' }).notNull().default(0),
    latencyCount: integer('latency_count').notNull().default(0),
    latencyMaxMs: integer('latency_max_ms').notNull().default(0),
    ...(buckets as Record<`latencyBucket${number}`, ReturnType<typeof integer>>),
  };
}

/**
 * The base grain: one row per UTC day × provider × model × user. Serves queries for one user (by
 * its (user_id, day) index) and the partial months of the top-users query.
 */
export const usageDaily = adminSchema.table(
  'usage_daily',
  {
    day: date('day', { mode: 'string' }).notNull(),
    provider: text('provider').notNull(),
    model: text('model').notNull(),
    userId: uuid('user_id').notNull(),
    ...usageMetrics(),
  },
  (t) => [primaryKey({ columns: [t.day, t.provider, t.model, t.userId] }), index('usage_daily_user_day_idx').on(t.userId, t.day)],
);

/** Roll-up without the user: day × provider × model (groupBy day, provider, model and the totals). */
export const usageDailyModel = adminSchema.table(
  'usage_daily_model',
  {
    day: date('day', { mode: 'string' }).notNull(),
    provider: text('provider').notNull(),
    model: text('model').notNull(),
    ...usageMetrics(),
  },
  (t) => [primaryKey({ columns: [t.day, t.provider, t.model] })],
);

/**
 * Tokens per user and UTC day, nothing else: a narrow table for ranking users over the days of
 * partial months at either end of a range (groupBy user), where the wide `usage_daily` would be
 * read for one column.
 */
export const usageDailyUserTokens = adminSchema.table(
  'usage_daily_user_tokens',
  {
    day: date('day', { mode: 'string' }).notNull(),
    userId: uuid('user_id').notNull(),
    tokens: bigint('tokens', { mode: 'number' }).notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.day, t.userId] })],
);

/**
 * Roll-up per user and calendar month, `month` being its first day (groupBy user: the whole months
 * of a range; the days of partial months at either end come from `usage_daily`). Keyed by user
 * first: a user's months are one index range.
 */
export const usageMonthlyUser = adminSchema.table(
  'usage_monthly_user',
  {
    userId: uuid('user_id').notNull(),
    month: date('month', { mode: 'string' }).notNull(),
    ...usageMetrics(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.month] })],
);

/**
 * What the chat-event handlers of one consumer transaction add, folded into `user_totals` and the
 * usage aggregates when that transaction commits (the deferred trigger `usage_pending_fold`, see
 * migration 0003), grouped by key and in key order: a run of 100 events costs one upsert per
 * distinct row, and transactions always lock rows in the same order. Rows never outlive their
 * transaction. `day`/`provider`/`model` are null for events that are not replies.
 */
export const usagePending = adminSchema.table('usage_pending', {
  userId: uuid('user_id').notNull(),
  at: timestamp('at', { withTimezone: true }),
  /** +1 chat created, −1 chat deleted. */
  chats: integer('chats').notNull().default(0),
  /** Messages the user sent. */
  sent: integer('sent').notNull().default(0),
  day: date('day', { mode: 'string' }),
  provider: text('provider'),
  model: text('model'),
  ...usageMetrics(),
});

// --- audit --------------------------------------------------------------------------------------

/**
 * Every auth and admin event (and the worker's export results), one row per event id: who acted,
 * whom it concerns, what, when (the event's time), from which address and user agent, and the
 * payload without secrets.
 */
export const auditEvents = adminSchema.table(
  'audit_events',
  {
    id: uuid('id').primaryKey(),
    type: text('type').notNull(),
    occurredAt: timestamp('occurred_at', { withTimezone: true }).notNull(),
    actorUserId: uuid('actor_user_id'),
    userId: uuid('user_id'),
    ip: text('ip'),
    userAgent: text('user_agent'),
    details: jsonb('details').$type<Record<string, unknown>>().notNull(),
    recordedAt: timestamp('recorded_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    index('audit_events_occurred_idx').on(t.occurredAt, t.id),
    index('audit_events_user_idx').on(t.userId, t.occurredAt, t.id),
    index('audit_events_actor_idx').on(t.actorUserId, t.occurredAt, t.id),
    index('audit_events_type_idx').on(t.type.op('text_pattern_ops'), t.occurredAt, t.id),
  ],
);

// --- providers ----------------------------------------------------------------------------------

export interface ProviderRouting {
  weight: number;
  timeoutMs: number;
  maxRetries: number;
  fallbacks: string[];
}

/**
 * Provider settings set through the admin API; the full state goes to chat on `admin.events`
 * (`provider.configured`). The API key is stored with envelope encryption: a random data key of
 * this provider encrypts it (AES-256-GCM), the data key is wrapped by the master key from
 * configuration (`kek_id` names it); both are bound to the provider id. `api_key_hint` is the
 * key's last four characters, for recognising it (kept only for long keys).
 */
export const providers = adminSchema.table(
  'providers',
  {
    id: text('id').primaryKey(),
    kind: text('kind').notNull(),
    enabled: boolean('enabled').notNull(),
    baseUrl: text('base_url'),
    models: jsonb('models').$type<string[]>().notNull(),
    routing: jsonb('routing').$type<ProviderRouting>().notNull(),
    apiKeyCiphertext: bytea('api_key_ciphertext'),
    apiKeyIv: bytea('api_key_iv'),
    apiKeyTag: bytea('api_key_tag'),
    dataKeyWrapped: bytea('data_key_wrapped'),
    dataKeyIv: bytea('data_key_iv'),
    dataKeyTag: bytea('data_key_tag'),
    kekId: text('kek_id'),
    apiKeyHint: text('api_key_hint'),
    revision: integer('revision').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
    updatedBy: uuid('updated_by').notNull(),
  },
  (t) => [
    check(
      'providers_api_key_complete_check',
      sql`(${t.apiKeyCiphertext} is null) = (${t.dataKeyWrapped} is null) and (${t.apiKeyCiphertext} is null) = (${t.kekId} is null)`,
    ),
  ],
);
