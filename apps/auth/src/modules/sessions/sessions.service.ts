import { randomUUID } from 'node:crypto';
import { createEvent, EVENTS, type Actor } from '@vivier/contracts';
import type { FastifyBaseLogger } from 'fastify';
import type { Executor, Publish } from '@vivier/messaging';
import { HttpProblem, problems, type Identity } from '@vivier/service-kit';
import type { AuthDatabase } from '../../database';
import { decodeCursor, pageOf, type TokenPairView } from '../../http.schema';
import { REFRESH_TOKEN_PATTERN, REFRESH_TOKEN_PREFIX, newOpaqueToken, sha256Hex, successorToken } from '../../security/opaque-token';
import { actorOf, recordFailure, type RequestOrigin } from '../audit/audit.service';
import type { RevocationNotifier } from '../revocation/revocation.service';
import type { AccessTokenIssuer } from '../tokens/tokens.service';
import { sessionsRepository, type RevocationReason, type SessionRow, type SessionsRepository } from './sessions.repository';

export interface SessionsServiceOptions {
  db: AuthDatabase;
  publish: Publish;
  issuer: AccessTokenIssuer;
  revocations: RevocationNotifier;
  /** Key of the deterministic successor of a refresh token. */
  successorKey: Buffer;
  lifetimeSeconds: number;
  reuseGraceMs: number;
  log: FastifyBaseLogger;
}

export interface SessionView {
  id: string;
  createdAt: string;
  lastUsedAt: string;
  userAgent: string | null;
  ip: string | null;
  current: boolean;
}

const invalidToken = (detail = 'The refresh token is invalid or expired; sign in again.') => new HttpProblem(401, 'invalid_token', detail);

/** The contract allows up to 1000 session ids per event. */
function chunks<T>(items: T[], size = 1000): T[][] {
  if (items.length === 0) return [[]];
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * Sessions: one per login, each a family of refresh tokens (RFC 9700 §4.14).
 *
 * A refresh token is used once: refreshing rotates it to a successor. Presented again within
 * REFRESH_TOKEN_REUSE_GRACE_MS (a lost response, two tabs), it gets the same successor and
 * nothing is revoked; after that, its reuse means it was copied, and the whole session is
 * revoked, the newest token included. A session ends at `expiresAt` (login + lifetime) however
 * often it rotated.
 */
export class SessionsService {
  private readonly sessions: SessionsRepository;

  constructor(private readonly options: SessionsServiceOptions) {
    this.sessions = sessionsRepository(options.db);
  }

  get repository(): SessionsRepository {
    return this.sessions;
  }

  /** Starts a session inside the caller's transaction; returns its id and first refresh token. */
  async start(
    tx: Executor,
    input: { userId: string; method: 'password' | 'oidc'; oidcProvider?: string; origin: RequestOrigin },
  ): Promise<{ sessionId: string; refreshToken: string }> {
    const sessionId = randomUUID();
    const refreshToken = newOpaqueToken(REFRESH_TOKEN_PREFIX);
    await this.sessions.insertSession(
      {
        id: sessionId,
        userId: input.userId,
        method: input.method,
        oidcProvider: input.oidcProvider ?? null,
        expiresAt: new Date(Date.now() + this.options.lifetimeSeconds * 1000),
        origin: input.origin,
      },
      tx,
    );
    await this.sessions.insertRefreshToken({ sessionId, tokenHash: sha256Hex(refreshToken) }, tx);
    return { sessionId, refreshToken };
  }

  /** The token pair of a session that just started or rotated; `readAt`: when the user (its role) was read, at the latest. */
  async tokenPair(user: { id: string; role: 'user' | 'admin' }, sessionId: string, refreshToken: string, readAt?: Date): Promise<TokenPairView> {
    const access = await this.options.issuer.issue({ userId: user.id, sessionId, role: user.role }, readAt);
    return { accessToken: access.accessToken, refreshToken, expiresIn: access.expiresIn };
  }

  /**
   * Every outcome is audited: `session.refreshed` in the rotating transaction, `session.revoked`
   * (reuse_detected) in the revoking one, `operation.failed` for the rest.
   */
  async refresh(refreshToken: string, origin: RequestOrigin): Promise<TokenPairView> {
    const failed = (reason: 'invalid_token' | 'session_expired' | 'account_disabled', userId?: string) =>
      recordFailure(this.options, { operation: 'refresh', reason, ...(userId ? { userId } : {}) }, origin);
    if (!REFRESH_TOKEN_PATTERN.test(refreshToken)) {
      await failed('invalid_token');
      throw invalidToken();
    }
    const successor = successorToken(this.options.successorKey, refreshToken);
    const refreshed = (tx: Executor, session: SessionRow, rotated: boolean) =>
      this.options.publish(tx, createEvent(EVENTS.authSessionRefreshed, { actor: actorOf(origin, session.userId), userId: session.userId, sessionId: session.id, rotated }));
    // The new access token says it was issued no later than its role was read (see issue()).
    const readAt = new Date();
    const outcome = await this.options.db.transaction(async (tx) => {
      const found = await this.sessions.lockByTokenHash(sha256Hex(refreshToken), tx);
      if (!found) return { kind: 'invalid' as const };
      // The database's clock, read once the row is ours: a concurrent rotation has committed by now.
      const now = found.now;
      const { token, session, user } = found;
      if (session.revokedAt) return { kind: 'invalid' as const, userId: session.userId };
      if (session.expiresAt <= now) return { kind: 'expired' as const, userId: session.userId };
      if (user.disabledAt) return { kind: 'disabled' as const, userId: session.userId };
      if (token.rotatedAt) {
        if (now.getTime() - token.rotatedAt.getTime() <= this.options.reuseGraceMs) {
          const next = token.successorId ? await this.sessions.tokenById(token.successorId, tx) : undefined;
          if (!next || next.tokenHash !== sha256Hex(successor)) return { kind: 'invalid' as const, userId: session.userId };
          await this.sessions.touch(session.id, now, origin, tx);
          await refreshed(tx, session, false);
          return { kind: 'rotated' as const, user, session };
        }
        await this.sessions.revoke(session.id, 'reuse_detected', now, tx);
        await this.options.publish(
          tx,
          createEvent(EVENTS.authSessionRevoked, {
            actor: actorOf(origin),
            userId: session.userId,
            reason: 'reuse_detected',
            sessionIds: [session.id],
            familyId: session.id,
          }),
        );
        return { kind: 'reused' as const, session, now };
      }
      const successorId = await this.sessions.insertRefreshToken({ sessionId: session.id, tokenHash: sha256Hex(successor) }, tx);
      await this.sessions.markRotated(token.id, successorId, now, tx);
      await this.sessions.touch(session.id, now, origin, tx);
      await refreshed(tx, session, true);
      return { kind: 'rotated' as const, user, session };
    });

    switch (outcome.kind) {
      case 'invalid':
        await failed('invalid_token', outcome.userId);
        throw invalidToken();
      case 'expired':
        await failed('session_expired', outcome.userId);
        throw invalidToken('The session has reached its maximum lifetime; sign in again.');
      case 'disabled':
        await failed('account_disabled', outcome.userId);
        throw new HttpProblem(403, 'account_disabled', 'This account is disabled.');
      case 'reused':
        await this.options.revocations.sessionsRevoked(outcome.session.userId, [outcome.session.id], outcome.now);
        throw new HttpProblem(401, 'token_reused', 'This refresh token was already used; every token of this sign-in has been revoked.');
      case 'rotated':
        return this.tokenPair(outcome.user, outcome.session.id, successor, readAt);
    }
  }

  /** Ends the session of a refresh token (any token of the family). Unknown tokens are ignored. */
  async logout(refreshToken: string, origin: RequestOrigin): Promise<void> {
    if (!REFRESH_TOKEN_PATTERN.test(refreshToken)) return;
    const session = await this.sessions.sessionByTokenHash(sha256Hex(refreshToken));
    if (!session || session.revokedAt) return;
    await this.revoke(session, 'logout', actorOf(origin, session.userId));
  }

  /** Ends every session of the caller and invalidates every access token issued so far. */
  async logoutAll(identity: Identity, origin: RequestOrigin): Promise<void> {
    const now = new Date();
    const ids = await this.options.db.transaction((tx) => this.revokeAllOfUser(tx, identity.sub, 'logout_all', actorOf(origin, identity.sub), now));
    await this.notifyUserWide(identity.sub, ids, now);
  }

  async list(identity: Identity, query: { limit?: number; cursor?: string }): Promise<{ items: SessionView[]; nextCursor: string | null }> {
    const limit = query.limit ?? 50;
    const rows = await this.sessions.listActive(identity.sub, new Date(), limit + 1, decodeCursor(query.cursor));
    return pageOf(rows, limit, (row) => this.view(row, identity));
  }

  /** Revokes one of the caller's sessions; another user's (or an unknown) session is 404. */
  async revokeOne(identity: Identity, sessionId: string, origin: RequestOrigin): Promise<void> {
    const session = await this.sessions.byIdForUser(sessionId, identity.sub);
    if (!session) throw problems.notFound('No such session.');
    if (session.revokedAt) return;
    await this.revoke(session, 'revoked_by_user', actorOf(origin, identity.sub));
  }

  /**
   * Inside the caller's transaction: revokes every active session of a user (but `exceptId`) and
   * writes the `session.revoked` event. The caller tells Redis once it committed.
   */
  async revokeAllOfUser(tx: Executor, userId: string, reason: RevocationReason, actor: Actor, at: Date, exceptId?: string): Promise<string[]> {
    const ids = await this.sessions.revokeAllOfUser(userId, reason, at, exceptId, tx);
    for (const sessionIds of chunks(ids)) {
      await this.options.publish(tx, createEvent(EVENTS.authSessionRevoked, { actor, userId, reason, sessionIds }));
    }
    return ids;
  }

  /** Redis after a user-wide revocation: the sessions, and every token issued before `at`. */
  async notifyUserWide(userId: string, sessionIds: string[], at: Date): Promise<void> {
    if (sessionIds.length > 0) await this.options.revocations.sessionsRevoked(userId, sessionIds, at);
    await this.options.revocations.tokensInvalidated(userId, at);
  }

  /** Whether the session a caller presents (`sid`) is still active. */
  async isActive(sessionId: string): Promise<boolean> {
    return (await this.sessions.activeIds([sessionId], new Date())).has(sessionId);
  }

  private async revoke(session: SessionRow, reason: RevocationReason, actor: Actor): Promise<void> {
    const now = new Date();
    const revoked = await this.options.db.transaction(async (tx) => {
      if (!(await this.sessions.revoke(session.id, reason, now, tx))) return false;
      await this.options.publish(tx, createEvent(EVENTS.authSessionRevoked, { actor, userId: session.userId, reason, sessionIds: [session.id] }));
      return true;
    });
    if (revoked) await this.options.revocations.sessionsRevoked(session.userId, [session.id], now);
  }

  private view(row: SessionRow, identity: Identity): SessionView {
    return {
      id: row.id,
      createdAt: row.createdAt.toISOString(),
      lastUsedAt: row.lastUsedAt.toISOString(),
      userAgent: row.userAgent,
      ip: row.ip,
      current: identity.sid === row.id,
    };
  }
}
