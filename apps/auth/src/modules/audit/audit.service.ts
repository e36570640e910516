import type { FastifyRequest } from 'fastify';
import type { Actor } from '@vivier/contracts';

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
