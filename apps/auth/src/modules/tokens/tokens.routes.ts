import { Type } from '@sinclair/typebox';
import type { ServiceApp } from '@vivier/service-kit';
import { problemResponses } from '../../http.schema';
import type { SigningKeyRing } from './tokens.service';

const Jwk = Type.Object({
  kty: Type.String(),
  crv: Type.String(),
  x: Type.String(),
  kid: Type.String(),
  alg: Type.String(),
  use: Type.Literal('sig'),
});

/** JWKS max-age: the gateway refetches at once on an unknown `kid`, so this only bounds staleness. */
const JWKS_MAX_AGE_SECONDS = 300;

export async function tokensRoutes(app: ServiceApp, { keys }: { keys: SigningKeyRing }): Promise<void> {
  app.get(
    '/.well-known/jwks.json',
    {
      schema: {
        tags: ['auth'],
        summary: 'Public keys that verify access tokens',
        description: 'Every key whose tokens may still be alive, including keys retired by a rotation until their last token expires.',
        response: { 200: Type.Object({ keys: Type.Array(Jwk) }) },
      },
    },
    async (_request, reply) => {
      reply.header('cache-control', `public, max-age=${JWKS_MAX_AGE_SECONDS}`);
      return keys.jwks();
    },
  );

  app.post(
    '/internal/v1/signing-keys/rotate',
    {
      preHandler: app.requireInternalCall,
      schema: {
        hide: true,
        response: { 201: Type.Object({ kid: Type.String(), createdAt: Type.String({ format: 'date-time' }) }), ...problemResponses(403) },
      },
    },
    async (_request, reply) => {
      const created = await keys.rotate();
      return reply.code(201).send({ kid: created.kid, createdAt: created.createdAt.toISOString() });
    },
  );
}
