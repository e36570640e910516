import { Type } from '@sinclair/typebox';
import { requireIdentity, type ServiceApp } from '@vivier/service-kit';
import { problemResponses } from '../../http.schema';
import type { ModelCatalog } from './models.service';

const Model = Type.Object({
  id: Type.String({ description: 'what to send as `model`: `<provider>/<model>` or an alias' }),
  type: Type.Union([Type.Literal('model'), Type.Literal('alias')]),
  provider: Type.String({ description: 'for an alias: its first deployment’s provider' }),
  model: Type.String({ description: "the provider's own model name" }),
  contextWindow: Type.Integer({ description: 'tokens (for an alias, the smallest of its deployments)' }),
  deployments: Type.Optional(Type.Array(Type.String(), { description: 'alias only: its fallback chain' })),
  default: Type.Boolean({ description: 'the model of chats that name none' }),
});

export async function modelsRoutes(app: ServiceApp, { models }: { models: ModelCatalog }): Promise<void> {
  app.get(
    '/api/v1/models',
    {
      preHandler: requireIdentity,
      schema: {
        tags: ['models'],
        security: [{ bearer: [] }],
        summary: 'Models and aliases the configured providers serve',
        description:
          'Aliases, configured deployments, the models Ollama and OpenAI-compatible servers list (asked at start and every `router.discoveryIntervalMs`, 5 min by default), and the well-known models of enabled vendors. Any `<provider>/<model>` of an enabled provider is accepted too (passed through to it), listed or not.',
        response: { 200: Type.Object({ items: Type.Array(Model) }), ...problemResponses(401) },
      },
    },
    async () => ({
      items: models.list().map((m) => ({
        id: m.id,
        type: m.type,
        provider: m.provider,
        model: m.model,
        contextWindow: m.contextWindow,
        ...(m.deployments ? { deployments: m.deployments } : {}),
        default: m.id === models.defaultModel,
      })),
    }),
  );
}
