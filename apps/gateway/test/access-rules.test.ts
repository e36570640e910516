import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifyContext, type GatewayContext } from '@vivier/service-kit';
import http from 'node:http';
import {
  AuthStandIn,
  SECRET,
  bearer,
  cleanup,
  eventually,
  standIn,
  startGateway,
  type Gateway,
  type StandIn,
} from './support';

afterEach(cleanup);

let auth: AuthStandIn;
/** One stand-in for the three services: it records what reached it and with which context. */
let services: StandIn;
let gw: Gateway;
let contexts: Array<{ url: string; context: GatewayContext | undefined }>;

beforeEach(async () => {
  auth = await AuthStandIn.start();
  contexts = [];
  services = await standIn((req, res) => {
    contexts.push({ url: req.url ?? '', context: verifyContext(req.headers, SECRET) });
    res.end('{}');
  });
  // The JWKS and API key check come from the auth stand-in; the auth routes themselves go to `services`.
  gw = await startGateway({ AUTH_URL: auth.url, CHAT_URL: services.url, ADMIN_URL: services.url });
});

describe('which routes need what', () => {
  it('answers the OpenAI-compatible API in OpenAI\'s error shape (the SDKs read it), with the same status and headers', async () => {
    const res = await gw.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { model: 'm', messages: [] } });
    expect(res.statusCode).toBe(401);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
    expect(res.json()).toEqual({ error: { message: expect.any(String), type: 'authentication_error', param: null, code: 'invalid_api_key' } });
    expect(Number(res.headers['content-length'])).toBe(Buffer.byteLength(res.body));
  });

  it('answers 401 unauthorized (problem details, WWW-Authenticate) without credentials on protected routes', async () => {
    for (const url of [
      '/api/v1/chats',
      '/api/v1/models',
      '/api/v1/files',
      '/api/v1/exports/e1',
      '/api/v1/admin/users',
      '/api/v1/auth/me',
      '/api/v1/auth/sessions',
      '/api/v1/auth/api-keys',
      '/api/v1/auth/not-a-route',
    ]) {
      const res = await gw.app.inject({ method: 'GET', url });
      expect(res.statusCode, url).toBe(401);
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(res.json()).toMatchObject({
        code: 'unauthorized',
        status: 401,
        requestId: res.headers['x-request-id'],
      });
      expect(res.headers['www-authenticate']).toBe('Bearer realm="vivier"');
    }
    for (const authorization of ['Basic dXNlcjpwYXNz', 'Bearer ', 'Token abc']) {
      expect(
        (await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: { authorization } })).statusCode,
      ).toBe(401);
    }
    expect(services.requests).toEqual([]);
  });

  it('lets the public routes through without credentials, with a signed context of IP and user agent only', async () => {
    const auth2 = await standIn((req, res) => {
      contexts.push({ url: req.url ?? '', context: verifyContext(req.headers, SECRET) });
      res.end('{}');
    });
    const open = await startGateway({ AUTH_URL: auth2.url });
    await eventually(() => auth2.requests.length === 1); // the JWKS prefetch at start-up
    contexts.length = 0;
    const routes: Array<[string, string]> = [
      ['POST', '/api/v1/auth/register'],
      ['POST', '/api/v1/auth/login'],
      ['POST', '/api/v1/auth/refresh'],
      ['POST', '/api/v1/auth/logout'],
      ['GET', '/api/v1/auth/oauth/google/start'],
      ['GET', '/api/v1/auth/oauth/google/callback?code=c&state=s'],
      ['POST', '/api/v1/auth/oauth/mfa'],
      ['GET', '/.well-known/jwks.json'],
    ];
    for (const [method, url] of routes) {
      const res = await open.app.inject({
        method: method as 'GET',
        url,
        headers: { 'user-agent': 'curl/8' },
        ...(method === 'POST' ? { payload: {} } : {}),
      });
      expect(res.statusCode, url).toBe(200);
    }
    expect(contexts.map((c) => c.url)).toEqual(routes.map(([, url]) => url));
    for (const { context } of contexts) {
      expect(context).toMatchObject({ ip: '127.0.0.1', userAgent: 'curl/8' });
      expect(context!.identity).toBeUndefined();
    }
    expect((await open.app.inject({ method: 'GET', url: '/docs/json' })).statusCode).toBe(200);
  });

  it('refuses paths with dot segments that could reach a protected route through a public prefix', async () => {
    const open = await startGateway({ AUTH_URL: services.url }, { listen: true });
    await eventually(() => services.requests.length === 1); // the JWKS prefetch at start-up
    // Raw HTTP: clients such as fetch would resolve the dots before sending.
    const rawGet = (path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = http.request(`${open.url}${path}`, { path }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end();
      });
    for (const path of [
      '/api/v1/auth/oauth/../me',
      '/api/v1/auth/oauth/%2e%2e/me',
      '/api/v1/auth/oauth/google/..',
      '/api/v1/auth/login/./../sessions',
      '/api/v1/auth/oauth/..%2F..%2Fsessions',
      '/api/v1/auth/oauth/%2E%2E%5Cme',
      '/api/v1/auth/oauth/..\\me',
    ]) {
      const res = await rawGet(path);
      expect(res.status, path).toBe(400);
      expect(JSON.parse(res.body)).toMatchObject({ code: 'bad_url' });
    }
    expect(services.requests).toHaveLength(1);
  });

  it('answers 403 forbidden to a user token on admin routes and forwards an admin token', async () => {
    const user = await auth.sign({ role: 'user' });
    const res = await gw.app.inject({
      method: 'PATCH',
      url: '/api/v1/admin/users/u1',
      headers: bearer(user),
      payload: { disabled: true },
    });
    expect(res.statusCode).toBe(403);
    expect(res.json()).toMatchObject({ code: 'forbidden' });
    expect(services.requests).toEqual([]);

    auth.apiKeys.set('vk_user_key_for_admin_route_000', { userId: 'u-k', keyId: 'k', role: 'user' });
    expect(
      (
        await gw.app.inject({
          method: 'GET',
          url: '/api/v1/admin/users',
          headers: bearer('vk_user_key_for_admin_route_000'),
        })
      ).statusCode,
    ).toBe(403);

    const admin = await auth.sign({ role: 'admin', sub: 'u-admin' });
    const ok = await gw.app.inject({ method: 'GET', url: '/api/v1/admin/users', headers: bearer(admin) });
    expect(ok.statusCode).toBe(200);
    expect(contexts).toHaveLength(1);
    expect(contexts[0]!.context!.identity).toMatchObject({ sub: 'u-admin', role: 'admin' });
  });

  it('accepts an API key or an access token on the OpenAI-compatible API', async () => {
    auth.apiKeys.set('vk_openai_sdk_key_000000000000001', {
      userId: 'u-sdk',
      keyId: 'key-sdk',
      role: 'user',
    });
    const withKey = await gw.app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      headers: bearer('vk_openai_sdk_key_000000000000001'),
      payload: { model: 'sim/echo', messages: [] },
    });
    expect(withKey.statusCode).toBe(200);
    const withToken = await gw.app.inject({
      method: 'GET',
      url: '/v1/models',
      headers: bearer(await auth.sign({ sub: 'u-web' })),
    });
    expect(withToken.statusCode).toBe(200);
    expect(contexts.map((c) => c.context?.identity?.sub)).toEqual(['u-sdk', 'u-web']);
  });

  it('leaves the probes and metrics of the gateway itself alone', async () => {
    expect((await gw.app.inject({ method: 'GET', url: '/health' })).statusCode).toBe(200);
    expect((await gw.app.inject({ method: 'GET', url: '/ready' })).statusCode).toBe(200);
    expect((await gw.app.inject({ method: 'GET', url: '/nothing-here' })).statusCode).toBe(404);
  });
});
