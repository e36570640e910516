import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuthStandIn, bearer, cleanup, standIn, startGateway, type StandIn } from './support';

afterEach(cleanup);

let auth: AuthStandIn;
let services: StandIn;

beforeEach(async () => {
  auth = await AuthStandIn.start();
  // A service that answers with a header the edge must not let out.
  services = await standIn((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'x-powered-by': 'Express' });
    res.end('{}');
  });
});

function directives(csp: string | undefined): Map<string, string> {
  return new Map(
    (csp ?? '')
      .split(';')
      .map((d) => d.trim())
      .filter(Boolean)
      .map((d) => {
        const [name = '', ...values] = d.split(/\s+/);
        return [name, values.join(' ')] as const;
      }),
  );
}

describe('security headers', () => {
  it('sends a locked-down CSP, nosniff and no X-Powered-By on API responses, proxied, problems and 404s alike', async () => {
    const gw = await startGateway({ AUTH_URL: auth.url, CHAT_URL: services.url });
    const responses = [
      await gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(await auth.sign()) }),
      await gw.app.inject({ method: 'GET', url: '/api/v1/chats' }),
      await gw.app.inject({ method: 'GET', url: '/nothing' }),
    ];
    expect(responses.map((r) => r.statusCode)).toEqual([200, 401, 404]);
    for (const res of responses) {
      const csp = directives(res.headers['content-security-policy'] as string);
      expect(csp.get('default-src')).toBe("'none'");
      expect(csp.get('object-src')).toBe("'none'");
      expect(csp.get('base-uri')).toBe("'none'");
      expect(csp.get('frame-ancestors')).toBe("'none'");
      expect(res.headers['x-content-type-options']).toBe('nosniff');
      expect(res.headers['x-powered-by']).toBeUndefined();
      expect(res.headers['strict-transport-security']).toBeUndefined();
      expect(res.headers['referrer-policy']).toBe('no-referrer');
    }
  });

  it('scopes a relaxed CSP to Swagger UI under /docs (still no objects, no base)', async () => {
    const gw = await startGateway({ AUTH_URL: auth.url, CHAT_URL: services.url, ADMIN_URL: services.url });
    const res = await gw.app.inject({ method: 'GET', url: '/docs/' });
    expect(res.statusCode).toBe(200);
    const csp = directives(res.headers['content-security-policy'] as string);
    expect(csp.get('script-src')).toBe("'self'");
    expect(csp.get('style-src')).toBe("'self'");
    expect(csp.get('object-src')).toBe("'none'");
    expect(csp.get('base-uri')).toBe("'none'");
    expect(csp.get('default-src')).toBe("'none'");
  });

  it('sends HSTS only when the request came over TLS: X-Forwarded-Proto from a trusted proxy, or TLS itself', async () => {
    const untrusted = await startGateway({ AUTH_URL: auth.url, CHAT_URL: services.url });
    const spoofed = await untrusted.app.inject({
      method: 'GET',
      url: '/api/v1/health',
      headers: { 'x-forwarded-proto': 'https' },
    });
    expect(spoofed.headers['strict-transport-security']).toBeUndefined();

    const behindProxy = await startGateway({
      AUTH_URL: auth.url,
      CHAT_URL: services.url,
      TRUST_PROXY: '127.0.0.1',
    });
    const tls = await behindProxy.app.inject({
      method: 'GET',
      url: '/api/v1/health',
      headers: { 'x-forwarded-proto': 'https' },
    });
    expect(tls.headers['strict-transport-security']).toBe('max-age=31536000; includeSubDomains');
    const plain = await behindProxy.app.inject({
      method: 'GET',
      url: '/api/v1/health',
      headers: { 'x-forwarded-proto': 'http' },
    });
    expect(plain.headers['strict-transport-security']).toBeUndefined();
  });
});

describe('CORS', () => {
  const ALLOWED = 'https://app.example.com';

  it('echoes an allowed origin on simple requests and exposes the rate-limit headers', async () => {
    const gw = await startGateway({
      AUTH_URL: services.url,
      CORS_ORIGINS: `${ALLOWED},http://127.0.0.1:5173`,
    });
    const res = await gw.app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      headers: { origin: ALLOWED },
      payload: {},
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['access-control-allow-origin']).toBe(ALLOWED);
    expect(res.headers['access-control-allow-credentials']).toBeUndefined();
    expect(String(res.headers['access-control-expose-headers'])).toMatch(/ratelimit-policy/);
    expect(String(res.headers.vary)).toMatch(/Origin/i);
  });

  it('gives a foreign origin no Access-Control-Allow-Origin, on simple requests and preflights', async () => {
    const gw = await startGateway({ AUTH_URL: services.url, CORS_ORIGINS: ALLOWED });
    const simple = await gw.app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      headers: { origin: 'https://evil.example' },
      payload: {},
    });
    expect(simple.headers['access-control-allow-origin']).toBeUndefined();
    const preflight = await gw.app.inject({
      method: 'OPTIONS',
      url: '/api/v1/chats',
      headers: {
        origin: 'https://evil.example',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization',
      },
    });
    expect(preflight.headers['access-control-allow-origin']).toBeUndefined();
    // A look-alike origin is not an allowed one.
    const lookalike = await gw.app.inject({
      method: 'GET',
      url: '/api/v1/health',
      headers: { origin: 'https://app.example.com.evil.example' },
    });
    expect(lookalike.headers['access-control-allow-origin']).toBeUndefined();
    expect(services.requests.filter((r) => r.method === 'OPTIONS')).toEqual([]);
  });

  it('answers an allowed preflight at the edge, without credentials, never forwarding it', async () => {
    const gw = await startGateway({ AUTH_URL: auth.url, CHAT_URL: services.url, CORS_ORIGINS: ALLOWED });
    const res = await gw.app.inject({
      method: 'OPTIONS',
      url: '/api/v1/chats/c1/messages',
      headers: {
        origin: ALLOWED,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, content-type',
      },
    });
    expect(res.statusCode).toBe(204);
    expect(res.headers['access-control-allow-origin']).toBe(ALLOWED);
    expect(String(res.headers['access-control-allow-methods'])).toMatch(/POST/);
    expect(String(res.headers['access-control-allow-headers'])).toMatch(/authorization/);
    expect(res.headers['access-control-max-age']).toBe('600');
    expect(services.requests).toEqual([]);
  });

  it('allows no origin at all by default', async () => {
    const gw = await startGateway({ AUTH_URL: services.url });
    const res = await gw.app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      headers: { origin: ALLOWED },
      payload: {},
    });
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
  });
});
