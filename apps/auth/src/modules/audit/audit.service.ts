import type { FastifyBaseLogger, FastifyRequest } from 'fastify';
import { createEvent, EVENTS, type Actor, type AuthOperationFailedData } from '@vivier/contracts';
import type { Publish } from '@vivier/messaging';
import { HttpProblem } from '@vivier/service-kit';
import type { AuthDatabase } from '../../database';

/** Where a request came from, as the gateway vouched for it; what audit events record. */
export interface RequestOrigin {
  ip: string;
  userAgent: string | undefined;
}

export function originOf(request: FastifyRequest): RequestOrigin {
  return { ip: request.clientIp, userAgent: request.clientUserAgent };
}

/** The `actor` of an auth event: who acted and from where, truncated to the contract's limits. */
export function actorOf(origin: RequestOrigin | undefined, userId?: string): Actor {
  const actor: Actor = {};
  if (userId) actor.userId = userId;
  if (origin?.ip) actor.ip = origin.ip.slice(0, 64);
  if (origin?.userAgent) actor.userAgent = origin.userAgent.slice(0, 512);
  return actor;
}

/**
 * A refused auth operation (refresh, registration, password change, MFA on/off, API key) as an
 * `operation.failed` event, in a short transaction of its own: the operation itself changed
 * nothing. Sign-in failures have `login.failed` (AccountsService.loginFailed).
 */
export async function recordFailure(
  deps: { db: AuthDatabase; publish: Publish; log: FastifyBaseLogger },
  data: Omit<AuthOperationFailedData, 'actor'>,
  origin: RequestOrigin | undefined,
): Promise<void> {
  const event = createEvent(EVENTS.authOperationFailed, { actor: actorOf(origin, data.userId), ...data });
  try {
    await deps.db.transaction((tx) => deps.publish(tx, event));
  } catch (error) {
    // The refusal stands either way: a database that cannot take the record must not turn a 401
    // into a 500. Logged with what the event would have said (it carries no secret).
    deps.log.error({ err: error, audit: { type: event.type, data } }, 'could not record a refused auth operation');
  }
}

/**
 * Runs `operation`; when it is refused for one of `reasons` (HttpProblem code → audited reason),
 * records the failure before the refusal goes on to the caller.
 */
export async function auditedFailures<T>(
  deps: { db: AuthDatabase; publish: Publish; log: FastifyBaseLogger },
  what: { operation: AuthOperationFailedData['operation']; userId?: string; email?: string },
  reasons: Partial<Record<string, AuthOperationFailedData['reason']>>,
  origin: RequestOrigin | undefined,
  operation: () => Promise<T>,
): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    const reason = error instanceof HttpProblem ? reasons[error.code] : undefined;
    if (reason) {
      await recordFailure(deps, { operation: what.operation, reason, ...(what.userId ? { userId: what.userId } : {}), ...(what.email ? { email: what.email } : {}) }, origin);
    }
    throw error;
  }
}
