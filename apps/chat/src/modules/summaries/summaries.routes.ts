import { Type } from '@sinclair/typebox';
import { problems, type ServiceApp } from '@vivier/service-kit';
import { IdParams, Timestamp, Uuid, problemResponses } from '../../http.schema';
import type { SummariesService } from './summaries.service';

const SourceQuery = Type.Object(
  {
    userId: Uuid,
    historyBudget: Type.Integer({ minimum: 0, maximum: 100_000_000, description: "the context.truncated event's historyBudget" }),
    budget: Type.Integer({ minimum: 64, maximum: 10_000_000, description: 'tokens of messages the summarising model can read at once' }),
    afterId: Type.Optional(Uuid),
    afterAt: Type.Optional(Timestamp),
  },
  { additionalProperties: false },
);

const Source = Type.Object({
  summary: Type.Union([Type.Object({ text: Type.String(), throughMessageId: Uuid, throughCreatedAt: Timestamp }), Type.Null()]),
  messages: Type.Array(
    Type.Object({ id: Uuid, role: Type.Union([Type.Literal('user'), Type.Literal('assistant')]), content: Type.String(), createdAt: Timestamp }),
  ),
});

/** The worker's source of a chat's next summary (internal network, signed internal calls only). */
export async function summariesInternalRoutes(app: ServiceApp, { summaries }: { summaries: SummariesService }): Promise<void> {
  app.get(
    '/internal/v1/chats/:id/summary-source',
    {
      preHandler: app.requireInternalCall,
      schema: { hide: true, params: IdParams, querystring: SourceQuery, response: { 200: Source, ...problemResponses(400, 403, 404) } },
    },
    async (request, reply) => {
      const { userId, historyBudget, budget, afterId, afterAt } = request.query;
      if ((afterId === undefined) !== (afterAt === undefined)) throw problems.validation('afterId and afterAt go together.');
      const after = afterId && afterAt ? { id: afterId, createdAt: new Date(afterAt) } : undefined;
      reply.header('cache-control', 'no-store');
      return summaries.source(request.params.id, { userId, historyBudget, budget, ...(after ? { after } : {}) });
    },
  );
}
