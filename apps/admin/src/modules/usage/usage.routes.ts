import { Type } from '@sinclair/typebox';
import type { ServiceApp } from '@vivier/service-kit';
import { DayOrTime, Nullable, ProviderName, Uuid, adminSecurity, problemResponses } from '../../http.schema';
import type { UsageService } from './usage.service';

const Metrics = {
  messages: Type.Integer({ description: 'replies (any final status)' }),
  failures: Type.Integer({ description: 'replies that failed' }),
  cancelled: Type.Integer(),
  cacheHits: Type.Integer({ description: 'replies answered from the response cache' }),
  tokensIn: Type.Integer(),
  tokensOut: Type.Integer(),
  tokens: Type.Integer(),
  costMicros: Type.Integer({ description: 'cost in USD micro-units, from the price table' }),
  costUsd: Type.Number(),
  latencyMs: Type.Object(
    {
      count: Type.Integer({ description: 'completed replies not served from the cache' }),
      mean: Nullable(Type.Integer()),
      p50: Nullable(Type.Integer()),
      p95: Nullable(Type.Integer()),
      p99: Nullable(Type.Integer()),
      max: Nullable(Type.Integer()),
    },
    { description: 'request to last token; percentiles estimated from a fixed-bucket histogram' },
  ),
};

const Item = Type.Object({
  day: Type.Optional(Type.String({ description: 'groupBy=day: the UTC day' })),
  provider: Type.Optional(Type.String()),
  model: Type.Optional(Type.String()),
  userId: Type.Optional(Uuid),
  email: Type.Optional(Nullable(Type.String())),
  name: Type.Optional(Nullable(Type.String())),
  ...Metrics,
});

export async function usageRoutes(app: ServiceApp, { usage }: { usage: UsageService }): Promise<void> {
  app.get(
    '/api/v1/admin/usage',
    {
      schema: {
        tags: ['admin'],
        summary: 'Token, message, cost and latency totals over a range of days',
        description:
          '`from`/`to`: UTC days, both included (a timestamp counts as its day); default the last 30 days. `groupBy=user` lists the top `limit` users by tokens; the totals cover everyone.',
        security: adminSecurity,
        querystring: Type.Object({
          from: Type.Optional(DayOrTime),
          to: Type.Optional(DayOrTime),
          groupBy: Type.Optional(Type.Union([Type.Literal('day'), Type.Literal('provider'), Type.Literal('model'), Type.Literal('user')], { default: 'day' })),
          userId: Type.Optional(Uuid),
          provider: Type.Optional(ProviderName),
          model: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, default: 100, description: 'groupBy=user: how many users' })),
        }),
        response: {
          200: Type.Object({
            from: Type.String(),
            to: Type.String(),
            groupBy: Type.String(),
            source: Type.String({ description: 'the aggregate that answered' }),
            totals: Type.Object(Metrics),
            items: Type.Array(Item),
          }),
          ...problemResponses(400, 401, 403),
        },
      },
    },
    async (request) => usage.query(request.query),
  );
}
