import { Type } from '@sinclair/typebox';
import type { ServiceApp } from '@vivier/service-kit';
import { adminActorOf } from '../../admin-actor';
import { Nullable, NullableIntegerInput, Timestamp, Uuid, adminSecurity, problemResponses } from '../../http.schema';
import type { QuotasService } from './quotas.service';

// At most 2^53 - 1: past it a JSON number is no longer exact (and 1e21 is not a bigint PostgreSQL reads).
const MONTHLY_TOKENS = { minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'tokens per calendar month (UTC); null: unlimited' };

export async function quotasRoutes(app: ServiceApp, { quotas }: { quotas: QuotasService }): Promise<void> {
  app.put(
    '/api/v1/admin/quotas/:userId',
    {
      schema: {
        tags: ['admin'],
        summary: "Set a user's monthly token quota",
        description: 'Publishes `quota.set` on admin.events; chat answers 429 `quota_exceeded` past it.',
        security: adminSecurity,
        params: Type.Object({ userId: Uuid }),
        body: Type.Object({ monthlyTokens: NullableIntegerInput(MONTHLY_TOKENS) }, { additionalProperties: false }),
        response: { 200: Type.Object({ userId: Uuid, monthlyTokens: Nullable(Type.Integer(MONTHLY_TOKENS)), updatedAt: Timestamp }), ...problemResponses(400, 401, 403, 404) },
      },
    },
    async (request) => quotas.set(adminActorOf(request), request.params.userId, request.body.monthlyTokens),
  );
}
