import { createHmac, timingSafeEqual } from 'node:crypto';
import fp from 'fastify-plugin';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { problems } from './errors';

/**
 * Who is calling, as the gateway verified it (access token or API key). Services trust this only
 * when it arrives with a valid HMAC from the gateway (INTERNAL_IDENTITY_SECRET, shared by the
 * gateway and the services and by nobody else); the gateway strips both headers from client
 * requests, so a client cannot forge them.
 */
export interface Identity {
  /** User id. */
  sub: string;
  role: 'user' | 'admin';
  /** Session (login family) id for access tokens; absent for API keys. */
  sid?: string;
  /** API key id when the caller used one. */
  keyId?: string;
  kind: 'access_token' | 'api_key';
  /** Unix seconds after which a service refuses the header (replay bound). */
  exp: number;
}

export const IDENTITY_HEADER = 'x-vivier-identity';
export const IDENTITY_SIGNATURE_HEADER = 'x-vivier-identity-signature';

function sign(payload: string, secret: string): string {
  return createHmac('sha256', secret).update(payload).digest('base64url');
}

/** The two headers the gateway adds to a forwarded request. */
export function signIdentity(identity: Identity, secret: string): Record<string, string> {
  const payload = Buffer.from(JSON.stringify(identity)).toString('base64url');
  return { [IDENTITY_HEADER]: payload, [IDENTITY_SIGNATURE_HEADER]: sign(payload, secret) };
}

/** Returns the identity if the headers are present, signed with `secret` and unexpired. */
export function verifyIdentity(
  headers: Record<string, string | string[] | undefined>,
  secret: string,
  nowSeconds = Math.floor(Date.now() / 1000),
): Identity | undefined {
  const payload = headers[IDENTITY_HEADER];
  const signature = headers[IDENTITY_SIGNATURE_HEADER];
  if (typeof payload !== 'string' || typeof signature !== 'string') return undefined;
  const expected = Buffer.from(sign(payload, secret));
  const given = Buffer.from(signature);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) return undefined;
  try {
    const identity = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Identity;
    if (typeof identity.sub !== 'string' || typeof identity.exp !== 'number' || identity.exp < nowSeconds) return undefined;
    if (identity.role !== 'user' && identity.role !== 'admin') return undefined;
    return identity;
  } catch {
    return undefined;
  }
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set when the gateway vouched for the caller. */
    identity: Identity | undefined;
  }
}

/**
 * Reads the gateway's identity headers on every request. Routes that need a caller use
 * `requireIdentity` (401 otherwise) or `requireAdmin` (403 for non-admins).
 */
export const identityPlugin = fp<{ secret: string }>(
  async (app, { secret }) => {
    app.decorateRequest('identity', undefined);
    app.addHook('onRequest', async (request) => {
      request.identity = verifyIdentity(request.headers, secret);
      if (request.identity) request.log = request.log.child({ userId: request.identity.sub });
    });
  },
  { name: 'identity' },
);

export async function requireIdentity(request: FastifyRequest, _reply: FastifyReply): Promise<void> {
  if (!request.identity) throw problems.unauthorized();
}

export async function requireAdmin(request: FastifyRequest, _reply: FastifyReply): Promise<void> {
  if (!request.identity) throw problems.unauthorized();
  if (request.identity.role !== 'admin') throw problems.forbidden('This needs the admin role.');
}

/** The caller of a route guarded by requireIdentity. */
export function caller(request: FastifyRequest): Identity {
  if (!request.identity) throw problems.unauthorized();
  return request.identity;
}
