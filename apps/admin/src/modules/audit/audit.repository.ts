import { and, desc, eq, gte, like, lt, or, sql, type SQL } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { adminTables } from '@vivier/db-admin';
import { EVENTS } from '@vivier/contracts';

const { auditEvents } = adminTables;

export type AuditRow = typeof auditEvents.$inferSelect;
export type NewAuditRow = typeof auditEvents.$inferInsert;

export interface AuditFilter {
  userId?: string;
  actorId?: string;
  /** Full event types, or a prefix of their dotted name (`vivier.auth`, `vivier.auth.login.failed`). */
  type?: string;
  from?: Date;
  /** Exclusive. */
  to?: Date;
}

export interface AuditPosition {
  occurredAt: Date;
  id: string;
}

const escapeLike = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

/** The audit log (admin.audit_events): one row per auth, admin or export event, newest first. */
export function auditRepository(db: Executor) {
  return {
    /** Records events; an event already recorded (a redelivery, or one written at publish time) is skipped. */
    async insert(rows: NewAuditRow[], tx: Executor = db): Promise<void> {
      if (rows.length === 0) return;
      await tx.insert(auditEvents).values(rows).onConflictDoNothing({ target: auditEvents.id });
    },

    /** Whether a `provider.configured` of this provider and revision is recorded (a few rows of one type: its index). */
    async hasProviderRevision(providerId: string, revision: number, tx: Executor = db): Promise<boolean> {
      const rows = await tx
        .select({ id: auditEvents.id })
        .from(auditEvents)
        .where(
          and(
            eq(auditEvents.type, EVENTS.adminProviderConfigured.type),
            sql`${auditEvents.details}->>'providerId' = ${providerId}`,
            sql`${auditEvents.details}->>'revision' = ${String(revision)}`,
          ),
        )
        .limit(1);
      return rows.length > 0;
    },

    /** One page (`limit` rows) after `after`, in (occurred_at, id) descending order. */
    async page(filter: AuditFilter, limit: number, after?: AuditPosition): Promise<AuditRow[]> {
      const conditions: SQL[] = [];
      if (filter.userId) conditions.push(eq(auditEvents.userId, filter.userId));
      if (filter.actorId) conditions.push(eq(auditEvents.actorUserId, filter.actorId));
      if (filter.type) conditions.push(or(eq(auditEvents.type, filter.type), like(auditEvents.type, `${escapeLike(filter.type)}.%`))!);
      if (filter.from) conditions.push(gte(auditEvents.occurredAt, filter.from));
      if (filter.to) conditions.push(lt(auditEvents.occurredAt, filter.to));
      if (after) conditions.push(sql`(${auditEvents.occurredAt}, ${auditEvents.id}) < (${after.occurredAt.toISOString()}::timestamptz, ${after.id}::uuid)`);
      return db
        .select()
        .from(auditEvents)
        .where(conditions.length > 0 ? and(...conditions) : undefined)
        .orderBy(desc(auditEvents.occurredAt), desc(auditEvents.id))
        .limit(limit);
    },
  };
}
