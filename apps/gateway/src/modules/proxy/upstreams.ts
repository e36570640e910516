import type { GatewayConfig } from '../../config';

export type UpstreamName = 'auth' | 'chat' | 'admin';

export interface Route {
  /** Fastify route pattern(s) at the gateway; the path is forwarded unchanged. */
  patterns: string[];
  upstream: UpstreamName;
  bodyLimit?: 'upload';
}

/** Which service owns which public path. The gateway holds no state of its own. */
export const ROUTES: Route[] = [
  { patterns: ['/api/v1/auth', '/api/v1/auth/*', '/.well-known/jwks.json'], upstream: 'auth' },
  { patterns: ['/api/v1/chats', '/api/v1/chats/*', '/api/v1/models', '/api/v1/exports', '/api/v1/exports/*'], upstream: 'chat' },
  { patterns: ['/api/v1/files', '/api/v1/files/*'], upstream: 'chat', bodyLimit: 'upload' },
  { patterns: ['/api/v1/admin', '/api/v1/admin/*'], upstream: 'admin' },
  { patterns: ['/v1/*'], upstream: 'chat' },
];

export function upstreamUrls(config: GatewayConfig): Record<UpstreamName, string> {
  const trim = (url: string) => url.replace(/\/+$/, '');
  return { auth: trim(config.AUTH_URL), chat: trim(config.CHAT_URL), admin: trim(config.ADMIN_URL) };
}
