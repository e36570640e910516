import type { GatewayConfig } from '../../config';

export type UpstreamName = 'auth' | 'chat' | 'admin';

/**
 * Who may call a route: anyone (`public`), a caller with a valid access token or API key
 * (`user`), or such a caller with the admin role (`admin`).
 */
export type Access = 'public' | 'user' | 'admin';

export interface Route {
  /** Fastify route pattern(s) at the gateway; the path is forwarded unchanged. */
  patterns: string[];
  upstream: UpstreamName;
  access: Access;
  bodyLimit?: 'upload';
}

/**
 * Which service owns which public path, and who may call it. Anything not listed is 404 at the
 * gateway. The router picks the most specific pattern, so the public auth routes win over the
 * protected `/api/v1/auth/*` and an unknown auth path needs credentials (deny by default).
 */
export const ROUTES: Route[] = [
  {
    patterns: [
      '/api/v1/auth/register',
      '/api/v1/auth/login',
      '/api/v1/auth/refresh',
      '/api/v1/auth/logout',
      '/api/v1/auth/oauth/*',
      '/.well-known/jwks.json',
    ],
    upstream: 'auth',
    access: 'public',
  },
  { patterns: ['/api/v1/auth', '/api/v1/auth/*'], upstream: 'auth', access: 'user' },
  {
    patterns: ['/api/v1/chats', '/api/v1/chats/*', '/api/v1/models', '/api/v1/exports', '/api/v1/exports/*'],
    upstream: 'chat',
    access: 'user',
  },
  { patterns: ['/api/v1/files', '/api/v1/files/*'], upstream: 'chat', access: 'user', bodyLimit: 'upload' },
  { patterns: ['/api/v1/admin', '/api/v1/admin/*'], upstream: 'admin', access: 'admin' },
  // The OpenAI-compatible API: SDKs send an API key as a bearer token; access tokens work too.
  { patterns: ['/v1/*'], upstream: 'chat', access: 'user' },
];

export function upstreamUrls(config: GatewayConfig): Record<UpstreamName, string> {
  const trim = (url: string) => url.replace(/\/+$/, '');
  return { auth: trim(config.AUTH_URL), chat: trim(config.CHAT_URL), admin: trim(config.ADMIN_URL) };
}

/** Whether the gateway forwards `path` (an OpenAPI path, `{param}` templated) to `upstream`. */
export function routesTo(upstream: UpstreamName, path: string): Route | undefined {
  // The most specific pattern wins, as in the router: exact patterns before wildcards, longer first.
  let best: { route: Route; score: number } | undefined;
  for (const route of ROUTES) {
    for (const pattern of route.patterns) {
      let score = -1;
      if (pattern.endsWith('/*')) {
        const prefix = pattern.slice(0, -1);
        if (path.startsWith(prefix) && path.length > prefix.length) score = prefix.length;
      } else if (pattern === path) score = 10_000;
      if (score >= 0 && (!best || score > best.score)) best = { route, score };
    }
  }
  return best && best.route.upstream === upstream ? best.route : undefined;
}
