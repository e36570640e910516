import { Type } from '@sinclair/typebox';
import type { ServiceApp } from '@vivier/service-kit';
import { adminActorOf } from '../../admin-actor';
import { Nullable, NullableStringInput, ProviderName, Timestamp, Uuid, adminSecurity, problemResponses } from '../../http.schema';
import type { ProvidersService } from './providers.service';

const Kind = Type.Union(
  [Type.Literal('openai'), Type.Literal('anthropic'), Type.Literal('gemini'), Type.Literal('ollama'), Type.Literal('openai_compatible')],
  { description: 'wire protocol of the provider' },
);
const ModelName = Type.String({ minLength: 1, maxLength: 256 });
const BASE_URL = { minLength: 1, maxLength: 2048, pattern: '^https?://', description: "null for the vendor's default endpoint" };

const Routing = Type.Object(
  {
    weight: Type.Integer({ minimum: 0, maximum: 1000, description: 'load-balancing weight; 0 = fallback only' }),
    timeoutMs: Type.Integer({ minimum: 1, maximum: 600_000 }),
    maxRetries: Type.Integer({ minimum: 0, maximum: 10 }),
    fallbacks: Type.Array(ProviderName, { maxItems: 20, description: 'providers to try next, in order' }),
  },
  { additionalProperties: false },
);

const Provider = Type.Object({
  name: ProviderName,
  kind: Kind,
  enabled: Type.Boolean(),
  baseUrl: Nullable(Type.String()),
  models: Type.Array(Type.String()),
  routing: Routing,
  hasApiKey: Type.Boolean({ description: 'an API key is stored (it is never returned)' }),
  apiKeyLast4: Nullable(Type.String({ description: 'last four characters of a stored key of 16+ characters' })),
  revision: Type.Integer({ description: 'grows with every change' }),
  createdAt: Timestamp,
  updatedAt: Timestamp,
  updatedBy: Uuid,
});

const ProviderSettings = Type.Object(
  {
    kind: Kind,
    enabled: Type.Optional(Type.Boolean({ default: true })),
    baseUrl: Type.Optional(NullableStringInput(BASE_URL)),
    models: Type.Optional(Type.Array(ModelName, { maxItems: 500, uniqueItems: true, description: 'models offered explicitly (empty: the ones the provider lists)' })),
    routing: Type.Optional(Type.Partial(Routing, { additionalProperties: false })),
    apiKey: Type.Optional(
      NullableStringInput({
        minLength: 1,
        maxLength: 4096,
        // Visible ASCII, as every vendor's keys are: a key of multi-byte characters could outgrow
        // the event's encrypted envelope (it was a 500).
        pattern: '^[\\x21-\\x7e]+$',
        writeOnly: true,
        description: 'write-only: a new key; null removes the stored key; absent keeps it',
      }),
    ),
  },
  { additionalProperties: false },
);

export async function providersRoutes(app: ServiceApp, { providers }: { providers: ProvidersService }): Promise<void> {
  app.get(
    '/api/v1/admin/providers',
    {
      schema: {
        tags: ['admin'],
        summary: 'Provider settings set through the admin API',
        security: adminSecurity,
        response: { 200: Type.Object({ items: Type.Array(Provider) }), ...problemResponses(401, 403) },
      },
    },
    async () => ({ items: await providers.list() }),
  );

  app.get(
    '/api/v1/admin/providers/:name',
    {
      schema: {
        tags: ['admin'],
        summary: "One provider's settings",
        security: adminSecurity,
        params: Type.Object({ name: ProviderName }),
        response: { 200: Provider, ...problemResponses(400, 401, 403, 404) },
      },
    },
    async (request) => providers.get(request.params.name),
  );

  app.put(
    '/api/v1/admin/providers/:name',
    {
      schema: {
        tags: ['admin'],
        summary: "Create or replace a provider's settings",
        description:
          'The whole configuration (omitted fields take their defaults), except `apiKey`: absent keeps the stored key. Published as `provider.configured` on admin.events; chat and the worker apply it without a restart. A base URL that reaches a private, loopback or link-local address is refused (400 `unsafe_provider_url`) unless its host is in PROVIDER_ALLOWED_HOSTS.',
        security: adminSecurity,
        params: Type.Object({ name: ProviderName }),
        body: ProviderSettings,
        response: { 200: Provider, 201: Provider, ...problemResponses(400, 401, 403, 409) },
      },
    },
    async (request, reply) => {
      const { provider, created } = await providers.put(adminActorOf(request), request.params.name, request.body);
      return reply.code(created ? 201 : 200).send(provider);
    },
  );
}
