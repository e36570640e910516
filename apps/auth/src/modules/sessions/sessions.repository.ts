import { and, desc, eq, gt, inArray, isNull, lt, ne, or, sql, type SQL } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { authTables } from '@vivier/db-auth';
import { createdAtMs, type Cursor } from '../../http.schema';
import type { RequestOrigin } from '../audit/audit.service';

const { sessions, refreshTokens, users } = authTables;

export type SessionRow = typeof sessions.$inferSelect;
export type RefreshTokenRow = typeof refreshTokens.$inferSelect;
export type RevocationReason = 'logout' | 'logout_all' | 'reuse_detected' | 'admin_disabled' | 'password_changed' | 'revoked_by_user';

const clip = (value: string | undefined, max: number) => (value ? value.slice(0, max) : null);

/** Sessions (logins) and their refresh tokens (auth.sessions, auth.refresh_tokens). */
export function sessionsRepository(db: Executor) {
  return {
    async insertSession(
      row: { id: string; userId: string; method: 'password' | 'oidc'; oidcProvider: string | null; expiresAt: Date; origin: RequestOrigin },
      tx: Executor = db,
    ): Promise<void> {
      const { origin, ...rest } = row;
      await tx.insert(sessions).values({ ...rest, ip: clip(origin.ip, 64), userAgent: clip(origin.userAgent, 512) });
    },

    async insertRefreshToken(row: { sessionId: string; tokenHash: string }, tx: Executor = db): Promise<string> {
      const [inserted] = await tx.insert(refreshTokens).values(row).returning({ id: refreshTokens.id });
      return inserted!.id;
    },

    /**
     * The token with its session and user, the token and session rows locked (in that order)
     * until the transaction ends: concurrent refreshes of one token take turns and see each
     * other's rotation.
     */
    async lockByTokenHash(tokenHash: string, tx: Executor) {
      const [token] = await tx.select().from(refreshTokens).where(eq(refreshTokens.tokenHash, tokenHash)).for('update');
      if (!token) return undefined;
      const [session] = await tx.select().from(sessions).where(eq(sessions.id, token.sessionId)).for('update');
      // The database's clock, read once the rows are locked: every instance compares and writes
      // rotation times by this one clock (an instance whose clock ran ahead wrote a rotation in the
      // future, and a stolen token presented again was inside the grace window for that long).
      const [user] = await tx
        .select({ id: users.id, role: users.role, disabledAt: users.disabledAt, now: sql<number>`floor(extract(epoch from clock_timestamp()) * 1000)::float8` })
        .from(users)
        .where(eq(users.id, session!.userId));
      const { now, ...account } = user!;
      return { token, session: session!, user: account, now: new Date(Number(now)) };
    },

    async sessionByTokenHash(tokenHash: string, tx: Executor = db): Promise<SessionRow | undefined> {
      const rows = await tx
        .select({ session: sessions })
        .from(refreshTokens)
        .innerJoin(sessions, eq(sessions.id, refreshTokens.sessionId))
        .where(eq(refreshTokens.tokenHash, tokenHash));
      return rows[0]?.session;
    },

    async tokenById(id: string, tx: Executor = db): Promise<RefreshTokenRow | undefined> {
      const rows = await tx.select().from(refreshTokens).where(eq(refreshTokens.id, id));
      return rows[0];
    },

    async markRotated(tokenId: string, successorId: string, at: Date, tx: Executor = db): Promise<void> {
      await tx.update(refreshTokens).set({ rotatedAt: at, successorId }).where(eq(refreshTokens.id, tokenId));
    },

    async touch(sessionId: string, at: Date, origin: RequestOrigin, tx: Executor = db): Promise<void> {
      await tx
        .update(sessions)
        .set({ lastUsedAt: at, ip: clip(origin.ip, 64), userAgent: clip(origin.userAgent, 512) })
        .where(eq(sessions.id, sessionId));
    },

    /** Revokes one session if it is still active; true when it was. */
    async revoke(sessionId: string, reason: RevocationReason, at: Date, tx: Executor = db): Promise<boolean> {
      const rows = await tx
        .update(sessions)
        .set({ revokedAt: at, revokedReason: reason })
        .where(and(eq(sessions.id, sessionId), isNull(sessions.revokedAt)))
        .returning({ id: sessions.id });
      return rows.length > 0;
    },

    /** Revokes every active session of a user (but `exceptId`); returns their ids. */
    async revokeAllOfUser(userId: string, reason: RevocationReason, at: Date, exceptId: string | undefined, tx: Executor = db): Promise<string[]> {
      const conditions: SQL[] = [eq(sessions.userId, userId), isNull(sessions.revokedAt), gt(sessions.expiresAt, at)];
      if (exceptId) conditions.push(ne(sessions.id, exceptId));
      const rows = await tx
        .update(sessions)
        .set({ revokedAt: at, revokedReason: reason })
        .where(and(...conditions))
        .returning({ id: sessions.id });
      return rows.map((r) => r.id);
    },

    /** Active sessions of a user, newest first, after `cursor`. */
    async listActive(userId: string, now: Date, limit: number, cursor: Cursor | undefined, tx: Executor = db): Promise<SessionRow[]> {
      const conditions: SQL[] = [eq(sessions.userId, userId), isNull(sessions.revokedAt), gt(sessions.expiresAt, now)];
      if (cursor) {
        conditions.push(or(lt(createdAtMs(sessions.createdAt), cursor.createdAt), and(eq(createdAtMs(sessions.createdAt), cursor.createdAt), lt(sessions.id, cursor.id)))!);
      }
      return tx
        .select()
        .from(sessions)
        .where(and(...conditions))
        .orderBy(desc(createdAtMs(sessions.createdAt)), desc(sessions.id))
        .limit(limit);
    },

    async byIdForUser(id: string, userId: string, tx: Executor = db): Promise<SessionRow | undefined> {
      const rows = await tx.select().from(sessions).where(and(eq(sessions.id, id), eq(sessions.userId, userId)));
      return rows[0];
    },

    /** Whether these sessions exist and are active (for callers that present a `sid`). */
    async activeIds(ids: string[], now: Date, tx: Executor = db): Promise<Set<string>> {
      if (ids.length === 0) return new Set();
      const rows = await tx
        .select({ id: sessions.id })
        .from(sessions)
        .where(and(inArray(sessions.id, ids), isNull(sessions.revokedAt), gt(sessions.expiresAt, now)));
      return new Set(rows.map((r) => r.id));
    },
  };
}

export type SessionsRepository = ReturnType<typeof sessionsRepository>;
