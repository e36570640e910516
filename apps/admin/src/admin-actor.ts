import type { FastifyRequest } from 'fastify';
import { caller } from '@vivier/service-kit';
import type { AdminActor } from '@vivier/contracts';

/** The administrator behind a request, as events and the audit log name them. */
export function adminActorOf(request: FastifyRequest): AdminActor {
  const ip = request.clientIp ? request.clientIp.slice(0, 64) : undefined;
  const userAgent = request.clientUserAgent?.slice(0, 512);
  return { userId: caller(request).sub, ...(ip ? { ip } : {}), ...(userAgent ? { userAgent } : {}) };
}
