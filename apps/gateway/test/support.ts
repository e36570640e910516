/**
 * What the gateway tests stand on: real Redis (a key prefix per gateway), and small node:http
 * servers in the place of the services — the upstream contract under test (auth's JWKS and API
 * key check, a service's routes and OpenAPI document), not fakes of their databases.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import type { Redis } from 'ioredis';
import { createRedis, verifyInternalCall, type ServiceApp } from '@vivier/service-kit';
import { LogCapture, testEnv } from '@vivier/service-kit/testing';
import { buildGatewayApp } from '../src/app';
import { loadGatewayConfig } from '../src/config';

export const SECRET = 'gateway-test-internal-identity-secret-0123456789';

const cleanups: Array<() => Promise<unknown>> = [];

/** Runs (in reverse) everything the test started; call it in afterEach. */
export async function cleanup(): Promise<void> {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
}

export interface StandIn {
  url: string;
  requests: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders }>;
  server: http.Server;
}

/** A plain HTTP server standing in for a service (or an attacker's key server). */
export async function standIn(
  handler: http.RequestListener = (_req, res) => res.end('{}'),
): Promise<StandIn> {
  const requests: StandIn['requests'] = [];
  const server = http.createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(resolve);
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests, server };
}

export interface SignOptions {
  sub?: string;
  sid?: string;
  role?: 'user' | 'admin' | string;
  kid?: string;
  iss?: string;
  aud?: string;
  typ?: string;
  /** Seconds from now. */
  expiresIn?: number;
  iat?: number;
  header?: Record<string, unknown>;
}

interface SigningKey {
  privateKey: CryptoKey;
  publicJwk: JWK;
}

/**
 * Auth as the gateway sees it: `/.well-known/jwks.json` (Ed25519 keys, counted), the internal API
 * key check (only with a valid internal-call signature), `/openapi.json` and `/ready`.
 */
export class AuthStandIn {
  readonly keys = new Map<string, SigningKey>();
  readonly apiKeys = new Map<string, { userId: string; keyId: string; role: 'user' | 'admin' }>();
  jwksRequests = 0;
  verifyRequests = 0;
  /** The bodies of the verify calls (key, and the client's ip and user agent). */
  readonly verifyBodies: Array<{ key: string; ip?: string; userAgent?: string }> = [];
  openapi: unknown = { openapi: '3.1.0', info: { title: 'auth', version: '1' }, paths: {} };
  url = '';
  currentKid = '';

  static async start(): Promise<AuthStandIn> {
    const auth = new AuthStandIn();
    await auth.rotate();
    const server = await standIn((req, res) => auth.handle(req, res));
    auth.url = server.url;
    return auth;
  }

  /** A new signing key, published next to the old ones (rotation). */
  async rotate(kid = `k-${randomUUID().slice(0, 8)}`): Promise<string> {
    const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
    const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: 'EdDSA', use: 'sig' };
    this.keys.set(kid, { privateKey, publicJwk });
    this.currentKid = kid;
    return kid;
  }

  async sign(options: SignOptions = {}): Promise<string> {
    const kid = options.kid ?? this.currentKid;
    const key = this.keys.get(kid) ?? this.keys.get(this.currentKid)!;
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ sid: options.sid ?? `s-${randomUUID()}`, role: options.role ?? 'user' })
      .setProtectedHeader({ alg: 'EdDSA', kid, typ: options.typ ?? 'at+jwt', ...options.header })
      .setIssuer(options.iss ?? 'vivier')
      .setAudience(options.aud ?? 'vivier-api')
      .setSubject(options.sub ?? `u-${randomUUID()}`)
      .setIssuedAt(options.iat ?? now)
      .setExpirationTime(now + (options.expiresIn ?? 900))
      .setJti(randomUUID())
      .sign(key.privateKey);
  }

  /** More routes of auth, by `METHOD /path` (the tests' stand-ins for auth's public API). */
  readonly routes = new Map<string, http.RequestListener>();

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const route = this.routes.get(`${req.method} ${req.url}`);
    if (route) return void route(req, res);
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.url === '/.well-known/jwks.json') {
      this.jwksRequests += 1;
      return json(200, { keys: [...this.keys.values()].map((k) => k.publicJwk) });
    }
    if (req.url === '/internal/v1/api-keys/verify' && req.method === 'POST') {
      this.verifyRequests += 1;
      let raw = '';
      req.on('data', (chunk: Buffer) => (raw += chunk.toString()));
      req.on('end', () => {
        if (!verifyInternalCall(req.headers, SECRET)) return json(403, { code: 'forbidden' });
        const body = JSON.parse(raw) as { key: string; ip?: string; userAgent?: string };
        this.verifyBodies.push(body);
        const found = this.apiKeys.get(body.key);
        return found ? json(200, found) : json(401, { code: 'invalid_api_key' });
      });
      return;
    }
    if (req.url === '/openapi.json') return json(200, this.openapi);
    if (req.url === '/api/v1/auth/login' && req.method === 'POST')
      return json(200, { accessToken: 'issued-by-auth' });
    if (req.url === '/ready') return json(200, { status: 'ready', checks: {} });
    return json(404, { code: 'not_found' });
  }
}

export interface Gateway {
  app: ServiceApp;
  /** Set when started with `listen: true`. */
  url: string;
  logs: LogCapture;
  /** A Redis client with this gateway's key prefix (the prefix auth shares). */
  redis: Redis;
  prefix: string;
}

/** A gateway with its own Redis key prefix, so rate limits of one test never meet another's. */
export async function startGateway(
  env: Record<string, string>,
  options: { listen?: boolean; redisDown?: boolean } = {},
): Promise<Gateway> {
  const base = process.env.VIVIER_TEST_REDIS_PREFIX ?? 'vivier-test:';
  const prefix = `${base}gw-${randomUUID().slice(0, 8)}:`;
  const logs = new LogCapture();
  const config = loadGatewayConfig(
    testEnv('gateway', {
      LOG_LEVEL: 'info',
      INTERNAL_IDENTITY_SECRET: SECRET,
      REDIS_KEY_PREFIX: prefix,
      ...env,
    }),
  );
  const app = await buildGatewayApp(config, { logStream: logs });
  cleanups.push(() => app.close());
  let url = '';
  if (options.listen) url = await app.listen({ host: '127.0.0.1', port: 0 });
  else await app.ready();
  // Requests before the connection is up would take the Redis-down path.
  if (!options.redisDown) await eventually(() => app.redis.status === 'ready');
  const redis = createRedis(config.REDIS_URL, { keyPrefix: prefix, name: 'gateway-test' });
  redis.on('error', () => undefined);
  cleanups.push(async () => redis.disconnect());
  if (!options.redisDown) await eventually(() => redis.status === 'ready');
  return { app, url, logs, redis, prefix };
}

/** Waits until `check` is true (polling), or fails after `timeoutMs`. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const bearer = (credential: string) => ({ authorization: `Bearer ${credential}` });
