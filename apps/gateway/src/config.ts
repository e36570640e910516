import { isIP } from 'node:net';
import { Type, type Static } from '@sinclair/typebox';
import {
  ConfigError,
  Env,
  baseConfigProperties,
  identityConfigProperties,
  loadConfig,
  redisConfigProperties,
  splitList,
} from '@vivier/service-kit';

/** Every variable the gateway reads; the type below is derived from it, never written twice. */
export const gatewayConfigSchema = Type.Object({
  ...baseConfigProperties,
  ...identityConfigProperties,
  ...redisConfigProperties,
  PORT: Env.port(8080, 'Public HTTP port of the platform.'),
  AUTH_URL: Env.url(['http', 'https'], 'http://127.0.0.1:8081', 'Internal base URL of the auth service.'),
  CHAT_URL: Env.url(['http', 'https'], 'http://127.0.0.1:8082', 'Internal base URL of the chat service.'),
  ADMIN_URL: Env.url(['http', 'https'], 'http://127.0.0.1:8083', 'Internal base URL of the admin service.'),
  BODY_LIMIT_BYTES: Env.int(1_048_576, 'Largest request body accepted (bytes); larger ones get 413.', 1024),
  UPLOAD_BODY_LIMIT_BYTES: Env.int(
    26_214_400,
    'Largest upload body accepted on /api/v1/files (bytes).',
    1024,
  ),
  UPSTREAM_CONNECTIONS: Env.int(
    0,
    'Most connections open to one upstream service at once; 0: no cap. With a cap, requests past it queue, behind the long-lived streams (SSE replies) that hold connections too.',
    0,
  ),
  UPSTREAM_TIMEOUT_MS: Env.int(300_000, 'Longest wait for upstream headers or between body chunks.', 1000),

  // Who the client is: proxies in front of the gateway, browsers allowed to call it
  TRUST_PROXY: Env.list(
    '',
    'Comma-separated IPs or CIDRs of the proxies in front of the gateway whose X-Forwarded-For/-Proto are believed; empty = none (the peer address is the client).',
  ),
  CORS_ORIGINS: Env.list(
    '',
    'Comma-separated origins (https://app.example.com) that browsers may call the API from; empty = none.',
  ),

  // Access tokens (issued by auth) and API keys (verified by auth)
  JWT_ISSUER: Env.string('vivier', '`iss` of access tokens; the same value as the auth service.'),
  JWT_AUDIENCE: Env.string('vivier-api', '`aud` of access tokens; the same value as the auth service.'),
  JWT_CLOCK_TOLERANCE_SECONDS: Type.Integer({
    minimum: 0,
    maximum: 60,
    default: 5,
    description: 'Clock skew allowed when checking `exp` and `iat` of access tokens (seconds).',
  }),
  JWKS_CACHE_TTL_SECONDS: Env.int(
    300,
    'How long the JWKS from auth is used before it is fetched again in the background (seconds).',
    10,
  ),
  JWKS_REFETCH_COOLDOWN_SECONDS: Env.int(
    10,
    'A token with an unknown `kid` refetches the JWKS at most once per this many seconds (so random kids cannot flood auth).',
    1,
  ),
  REVOCATION_RECHECK_MS: Type.Integer({
    minimum: 100,
    maximum: 300_000,
    default: 30_000,
    description:
      'How often open requests (SSE replies, uploads, WebSockets) are checked against the revocation facts in Redis (ms): a revocation whose pub/sub message was missed still ends them within this time.',
  }),
  API_KEY_CACHE_TTL_MS: Type.Integer({
    minimum: 0,
    maximum: 5000,
    default: 5000,
    description:
      'How long an API key check answered by auth is reused (ms, at most 5000): a revoked key stops working within this time.',
  }),

  // Rate limits (GCRA in Redis; per gateway instance in memory while Redis is down)
  RATE_LIMIT_ENABLED: Env.bool(true, 'Rate limits on the public routes.'),
  RATE_LIMIT_WINDOW_SECONDS: Env.int(
    60,
    'Window of every rate limit (seconds); the quotas below are per window.',
    1,
  ),
  RATE_LIMIT_PER_USER: Env.int(600, 'Requests one user (access token or API key) may make per window.', 1),
  RATE_LIMIT_PER_IP: Env.int(
    120,
    'Requests one client IP may make per window without credentials (login, register, ...).',
    1,
  ),
  RATE_LIMIT_PER_IP_AUTHENTICATED: Env.int(
    3000,
    'Requests one client IP may make per window with credentials, all users together (a looser cap for offices behind one NAT).',
    1,
  ),

  EDGE_LEASE_REQUESTS: Type.Integer({
    minimum: 0,
    maximum: 1000,
    default: 64,
    description:
      'Most requests one edge lease lets a caller make on this instance without a Redis round trip (rate limits taken ahead, revocation facts read once; granted only far from the limits and while the revocation subscription is live). 0 or 1: every request asks Redis.',
  }),
  EDGE_LEASE_MS: Type.Integer({
    minimum: 50,
    maximum: 5000,
    default: 1000,
    description:
      'Lifetime of an edge lease (ms): unused requests go back to the quota after it, and it bounds a revocation whose pub/sub message was lost on a connection that never closed.',
  }),

  DOCS_CACHE_TTL_SECONDS: Env.int(
    30,
    'How long the merged OpenAPI document at /docs/json is reused (seconds).',
    0,
  ),
  WS_AUTH_TIMEOUT_MS: Env.int(5000, 'A socket that has not authenticated (header or first frame) by then is closed (4401).', 100),
  WS_PING_INTERVAL_MS: Env.int(30_000, 'Sockets are pinged this often; one that did not answer the previous ping is dropped.', 100),
  WS_MAX_BUFFERED_BYTES: Env.int(1_048_576, 'A socket with more unsent bytes than this is too slow and is closed (4008).', 1024),
  WS_MAX_SOCKETS_PER_USER: Env.int(32, 'Sockets one user may hold open on one gateway instance; one more is closed (4029).', 1),
  WS_MAX_FRAME_BYTES: Env.int(65_536, 'Largest client frame; a larger one closes the socket (1009).', 256),
});

export type GatewayConfig = Static<typeof gatewayConfigSchema>;

const CIDR = /^([0-9a-fA-F:.]+)\/(\d{1,3})$/;

/** An IP, a CIDR, or one of proxy-addr's names (loopback, linklocal, uniquelocal). */
function isTrustEntry(entry: string): boolean {
  if (entry === 'loopback' || entry === 'linklocal' || entry === 'uniquelocal') return true;
  if (isIP(entry)) return true;
  const match = CIDR.exec(entry);
  if (!match) return false;
  const family = isIP(match[1]!);
  const bits = Number(match[2]);
  return (family === 4 && bits <= 32) || (family === 6 && bits <= 128);
}

export function loadGatewayConfig(env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const config = loadConfig('gateway', gatewayConfigSchema, env);
  const issues: Array<{ variable: string; message: string }> = [];
  const badProxies = splitList(config.TRUST_PROXY).filter((entry) => !isTrustEntry(entry));
  if (badProxies.length > 0) {
    issues.push({
      variable: 'TRUST_PROXY',
      message: `has entries that are neither an IP nor a CIDR: ${badProxies.join(', ')}`,
    });
  }
  const badOrigins = splitList(config.CORS_ORIGINS).filter((origin) => {
    try {
      const url = new URL(origin);
      return url.origin !== origin || (url.protocol !== 'https:' && url.protocol !== 'http:');
    } catch {
      return true;
    }
  });
  if (badOrigins.length > 0) {
    issues.push({
      variable: 'CORS_ORIGINS',
      message: `has entries that are not origins (scheme://host[:port], no path): ${badOrigins.join(', ')}`,
    });
  }
  if (issues.length > 0) throw new ConfigError('gateway', issues);
  return config;
}
