import { decodeTimeCursor, encodeTimeCursor, problems } from '@vivier/service-kit';
import type { AnyEvent } from '@vivier/contracts';
import type { Executor } from '@vivier/messaging';
import type { AuditFilter, AuditPosition, AuditRow, NewAuditRow, auditRepository } from './audit.repository';

export interface AuditQuery {
  userId?: string;
  actorId?: string;
  type?: string;
  from?: string;
  to?: string;
  limit?: number;
  cursor?: string;
}

export interface AuditView {
  id: string;
  type: string;
  occurredAt: string;
  actorUserId: string | null;
  userId: string | null;
  ip: string | null;
  userAgent: string | null;
  details: Record<string, unknown>;
}

/** Keys whose values are secrets if they ever appear in a payload: dropped from the details. */
const SECRET_KEYS = new Set(['password', 'newPassword', 'secret', 'token', 'accessToken', 'refreshToken', 'apiKey', 'key', 'mfaCode', 'recoveryCode', 'recoveryCodes']);

/**
 * The details of an audit record: the payload without its actor (stored in columns) and without
 * anything secret. Contracts already keep secrets off events; this is the second line: the
 * provider key's encrypted envelope becomes `apiKeySet`, and keys that name secrets are dropped.
 */
export function auditDetails(data: Record<string, unknown>): Record<string, unknown> {
  const clean = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(clean);
    if (value === null || typeof value !== 'object') return value;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      if (k === 'apiKeyEnvelope') out.apiKeySet = v !== null && v !== undefined;
      else if (!SECRET_KEYS.has(k)) out[k] = clean(v);
    }
    return out;
  };
  const { actor: _actor, ...rest } = data;
  return clean(rest) as Record<string, unknown>;
}

/** The audit record of an event: who (actor), whom (the user it concerns), what, when, from where. */
export function auditRecordOf(event: AnyEvent): NewAuditRow {
  const data = event.data as Record<string, unknown>;
  const actor = (data.actor ?? {}) as { userId?: string; ip?: string; userAgent?: string };
  return {
    id: event.id,
    type: event.type,
    occurredAt: new Date(event.time),
    actorUserId: actor.userId ?? null,
    userId: typeof data.userId === 'string' ? data.userId : null,
    ip: actor.ip ?? null,
    userAgent: actor.userAgent ?? null,
    details: auditDetails(data),
  };
}

export function auditView(row: AuditRow): AuditView {
  return {
    id: row.id,
    type: row.type,
    occurredAt: row.occurredAt.toISOString(),
    actorUserId: row.actorUserId,
    userId: row.userId,
    ip: row.ip,
    userAgent: row.userAgent,
    details: row.details,
  };
}

function encodeCursor(row: AuditPosition): string {
  return encodeTimeCursor(row.occurredAt, row.id);
}

function decodeCursor(cursor: string | undefined): AuditPosition | undefined {
  const position = decodeTimeCursor(cursor);
  return position && { occurredAt: position.at, id: position.id };
}

function time(value: string, field: string, endOfDay: boolean): Date {
  const dateOnly = /^\d{4}-\d{2}-\d{2}$/.test(value);
  const ms = Date.parse(dateOnly ? `${value}T00:00:00Z` : value);
  if (Number.isNaN(ms)) throw problems.validation(`${field} is not a time.`, [{ path: `querystring/${field}`, message: 'must be YYYY-MM-DD or an ISO 8601 timestamp' }]);
  return new Date(dateOnly && endOfDay ? ms + 86_400_000 : ms);
}

const EXPORT_PAGE = 500;

export class AuditService {
  constructor(private readonly repository: ReturnType<typeof auditRepository>) {}

  async record(events: AnyEvent[], tx: Executor): Promise<void> {
    await this.repository.insert(events.map(auditRecordOf), tx);
  }

  /** Whether a `provider.configured` of this provider and revision is recorded already. */
  hasProviderRevision(providerId: string, revision: number, tx: Executor): Promise<boolean> {
    return this.repository.hasProviderRevision(providerId, revision, tx);
  }

  /**
   * `type`: a full event type (`vivier.auth.login.failed.v1`) or a dotted prefix with or without
   * `vivier.` (`auth`, `auth.login.failed`, `admin.user`). `from` inclusive, `to` exclusive; a
   * date alone for `to` means the end of that day.
   */
  filterOf(query: AuditQuery): AuditFilter {
    const type = query.type ? (query.type.startsWith('vivier.') ? query.type : `vivier.${query.type}`) : undefined;
    return {
      ...(query.userId ? { userId: query.userId } : {}),
      ...(query.actorId ? { actorId: query.actorId } : {}),
      ...(type ? { type } : {}),
      ...(query.from ? { from: time(query.from, 'from', false) } : {}),
      ...(query.to ? { to: time(query.to, 'to', true) } : {}),
    };
  }

  async page(query: AuditQuery): Promise<{ items: AuditView[]; nextCursor: string | null }> {
    const limit = query.limit ?? 50;
    const rows = await this.repository.page(this.filterOf(query), limit + 1, decodeCursor(query.cursor));
    const items = rows.slice(0, limit);
    const last = items[items.length - 1];
    return { items: items.map(auditView), nextCursor: rows.length > limit && last ? encodeCursor(last) : null };
  }

  /** Every matching record as NDJSON lines, fetched page by page as the client reads. */
  async *exportLines(query: AuditQuery): AsyncGenerator<string> {
    const filter = this.filterOf(query);
    let after = decodeCursor(query.cursor);
    for (;;) {
      const rows = await this.repository.page(filter, EXPORT_PAGE, after);
      if (rows.length === 0) return;
      yield rows.map((row) => `${JSON.stringify(auditView(row))}\n`).join('');
      if (rows.length < EXPORT_PAGE) return;
      const last = rows[rows.length - 1]!;
      after = { occurredAt: last.occurredAt, id: last.id };
    }
  }
}
