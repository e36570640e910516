import { sql } from 'drizzle-orm';
import { decodeTimeCursor, encodeTimeCursor, problems } from '@vivier/service-kit';
import { EVENTS, createEvent, type AdminActor, type AnyEvent } from '@vivier/contracts';
import type { Executor, Publish } from '@vivier/messaging';
import type { AuditService } from '../audit/audit.service';
import type { Role, UserListFilter, UserWithTotals, usersRepository } from './users.repository';

export interface UserView {
  id: string;
  email: string;
  name: string | null;
  role: Role;
  status: 'active' | 'disabled';
  disabled: boolean;
  mfaEnabled: boolean;
  createdAt: string;
  lastLoginAt: string | null;
  lastActiveAt: string | null;
  chats: number;
  messages: number;
  tokens: number;
  tokensIn: number;
  tokensOut: number;
  monthlyTokens: number | null;
}

export function userView(u: UserWithTotals): UserView {
  return {
    id: u.id,
    email: u.email,
    name: u.name,
    role: u.role,
    status: u.status,
    disabled: u.status === 'disabled',
    mfaEnabled: u.mfaEnabled,
    createdAt: u.createdAt.toISOString(),
    lastLoginAt: u.lastLoginAt?.toISOString() ?? null,
    lastActiveAt: u.lastActiveAt?.toISOString() ?? null,
    chats: u.chats,
    messages: u.messages,
    tokens: u.tokensIn + u.tokensOut,
    tokensIn: u.tokensIn,
    tokensOut: u.tokensOut,
    monthlyTokens: u.monthlyTokens,
  };
}

export interface UserChange {
  role?: Role;
  disabled?: boolean;
  /** The administrator's note on a disable. */
  reason?: string;
}

function encodeCursor(u: { createdAt: Date; id: string }): string {
  return encodeTimeCursor(u.createdAt, u.id);
}

function decodeCursor(cursor: string | undefined): { createdAt: Date; id: string } | undefined {
  const position = decodeTimeCursor(cursor);
  return position && { createdAt: position.at, id: position.id };
}

/** Serialises every change that could remove an active admin, so two of them cannot both pass the check. */
const ADMIN_SET_LOCK = sql`select pg_advisory_xact_lock(hashtext('vivier-admin:active-admins'))`;

export class UsersService {
  constructor(
    private readonly deps: {
      db: Executor;
      repository: ReturnType<typeof usersRepository>;
      publish: Publish;
      audit: AuditService;
    },
  ) {}

  async list(query: UserListFilter & { limit?: number; cursor?: string }): Promise<{ items: UserView[]; nextCursor: string | null }> {
    const limit = query.limit ?? 50;
    const filter: UserListFilter = {
      ...(query.q ? { q: query.q } : {}),
      ...(query.role ? { role: query.role } : {}),
      ...(query.status ? { status: query.status } : {}),
    };
    const rows = await this.deps.repository.list(filter, limit + 1, decodeCursor(query.cursor));
    const items = rows.slice(0, limit);
    const last = items[items.length - 1];
    return { items: items.map(userView), nextCursor: rows.length > limit && last ? encodeCursor(last) : null };
  }

  async get(id: string): Promise<UserView> {
    const user = await this.deps.repository.byId(id);
    if (!user) throw problems.notFound('No such user.');
    return userView(user);
  }

  /**
   * Changes a user's role and/or disables or enables them: the new state and its `admin.events`
   * (`user.role_changed`, `user.disabled`, `user.enabled`) in one transaction, with their audit
   * records. Auth applies them (sessions revoked at once on disable). Refuses (409 `last_admin`)
   * to leave the platform without an active admin.
   */
  async update(actor: AdminActor, id: string, change: UserChange): Promise<UserView> {
    const { db, repository, publish, audit } = this.deps;
    await db.transaction(async (tx) => {
      await tx.execute(ADMIN_SET_LOCK);
      const user = await repository.lock(id, tx);
      if (!user) throw problems.notFound('No such user.');
      const role = change.role ?? user.role;
      const status = change.disabled === undefined ? user.status : change.disabled ? 'disabled' : 'active';
      const wasActiveAdmin = user.role === 'admin' && user.status === 'active';
      const staysActiveAdmin = role === 'admin' && status === 'active';
      if (wasActiveAdmin && !staysActiveAdmin && (await repository.activeAdminsOtherThan(id, tx)) === 0) {
        throw problems.conflict('last_admin', 'This is the last active administrator: make another user an admin first.');
      }
      const events: AnyEvent[] = [];
      if (role !== user.role) events.push(createEvent(EVENTS.adminUserRoleChanged, { actor, userId: id, role, previousRole: user.role }));
      if (status !== user.status) {
        events.push(
          status === 'disabled'
            ? createEvent(EVENTS.adminUserDisabled, { actor, userId: id, ...(change.reason ? { reason: change.reason } : {}) })
            : createEvent(EVENTS.adminUserEnabled, { actor, userId: id }),
        );
      }
      if (events.length === 0) return;
      const now = new Date();
      await repository.setAccess(id, { role, status, disabledAt: status === 'disabled' ? now : null }, now, tx);
      await publish(tx, events);
      await audit.record(events, tx);
    });
    return this.get(id);
  }
}
