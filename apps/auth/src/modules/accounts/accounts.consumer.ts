import { EVENTS, CONSUMER_GROUPS, SUBSCRIPTIONS } from '@vivier/contracts';
import type { ConsumerSpec, EventHandlers } from '@vivier/messaging';
import type { FastifyBaseLogger } from 'fastify';
import type { RevocationNotifier } from '../revocation/revocation.service';
import type { SessionsService } from '../sessions/sessions.service';
import type { AccountsRepository } from './accounts.repository';

export interface AdminEventsDeps {
  accounts: AccountsRepository;
  sessions: SessionsService;
  revocations: RevocationNotifier;
  log: FastifyBaseLogger;
}

/**
 * What auth enforces from `admin.events` (group `auth`). Each handler writes with the consumer's
 * transaction, which also records the event id: a redelivered event changes nothing. Redis is
 * told before the commit; a retried event writes the same keys again, which is harmless.
 */
export function adminEventsConsumer(deps: AdminEventsDeps): ConsumerSpec {
  const handlers: EventHandlers = {
    [EVENTS.adminUserRoleChanged.type]: async (event, { tx, afterCommit }) => {
      const { userId, role } = event.data;
      if (!(await deps.accounts.setRole(userId, role, tx))) return;
      // Tokens carry the role: those issued before the change stop working, the next refresh carries
      // the new one. Written again once committed: a refresh or sign-in may read the old role until
      // then, and its token's iat (when it read) is older than that second write.
      await deps.revocations.tokensInvalidated(userId);
      afterCommit(() => deps.revocations.tokensInvalidated(userId));
      deps.log.info({ userId, role }, 'role changed by an administrator');
    },
    [EVENTS.adminUserDisabled.type]: async (event, { tx }) => {
      const { userId, actor } = event.data;
      const now = new Date();
      if (!(await deps.accounts.disable(userId, now, tx))) return;
      const revoked = await deps.sessions.revokeAllOfUser(tx, userId, 'admin_disabled', actor, now);
      await deps.revocations.userDisabled(userId, now);
      if (revoked.length > 0) await deps.revocations.sessionsRevoked(userId, revoked, now);
      deps.log.info({ userId, sessions: revoked.length }, 'user disabled by an administrator: sessions revoked');
    },
    [EVENTS.adminUserEnabled.type]: async (event, { tx }) => {
      const { userId } = event.data;
      if (!(await deps.accounts.enable(userId, tx))) return;
      await deps.revocations.userEnabled(userId);
      deps.log.info({ userId }, 'user enabled by an administrator');
    },
  };
  return { group: CONSUMER_GROUPS.auth, topics: [...SUBSCRIPTIONS.auth], handlers };
}
