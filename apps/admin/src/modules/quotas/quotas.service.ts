import { problems } from '@vivier/service-kit';
import { EVENTS, createEvent, type AdminActor } from '@vivier/contracts';
import type { Executor, Publish } from '@vivier/messaging';
import type { AuditService } from '../audit/audit.service';
import type { usersRepository } from '../users/users.repository';
import type { quotasRepository } from './quotas.repository';

export interface QuotaView {
  userId: string;
  monthlyTokens: number | null;
  updatedAt: string;
}

export class QuotasService {
  constructor(
    private readonly deps: {
      db: Executor;
      repository: ReturnType<typeof quotasRepository>;
      users: ReturnType<typeof usersRepository>;
      publish: Publish;
      audit: AuditService;
    },
  ) {}

  /** Stores the quota and publishes `quota.set` (chat enforces it) in one transaction. */
  async set(actor: AdminActor, userId: string, monthlyTokens: number | null): Promise<QuotaView> {
    const { db, repository, users, publish, audit } = this.deps;
    const updatedAt = new Date();
    await db.transaction(async (tx) => {
      if (!(await users.exists(userId, tx))) throw problems.notFound('No such user.');
      await repository.set({ userId, monthlyTokens, updatedBy: actor.userId, updatedAt }, tx);
      const event = createEvent(EVENTS.adminQuotaSet, { actor, userId, monthlyTokens }, { time: updatedAt });
      await publish(tx, event);
      await audit.record([event], tx);
    });
    return { userId, monthlyTokens, updatedAt: updatedAt.toISOString() };
  }
}
