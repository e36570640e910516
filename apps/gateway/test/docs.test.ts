import { afterEach, describe, expect, it } from 'vitest';
import { AuthStandIn, cleanup, standIn, startGateway } from './support';

afterEach(cleanup);

const problem = { type: 'object', properties: { code: { type: 'string' } } };

/** A service's own /openapi.json as @fastify/swagger would generate it from its route schemas. */
function serviceDocument(paths: Record<string, unknown>, schemas: Record<string, unknown> = {}) {
  return {
    openapi: '3.1.0',
    info: { title: 'service', version: '1.0.0' },
    components: { schemas, securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    paths,
  };
}

const op = (summary: string, ref?: string) => ({
  summary,
  responses: {
    200: {
      description: 'ok',
      content: { 'application/json': { schema: ref ? { $ref: ref } : { type: 'object' } } },
    },
  },
});

async function serviceWith(document: unknown) {
  return standIn((req, res) => {
    if (req.url === '/openapi.json') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify(document));
    }
    res.end('{}');
  });
}

describe('OpenAPI at /docs', () => {
  it('merges the documents of auth, chat and admin with its own, public routes marked, internal paths left out', async () => {
    const auth = await AuthStandIn.start();
    auth.openapi = serviceDocument(
      {
        '/api/v1/auth/login': { post: op('Log in', '#/components/schemas/Problem') },
        '/api/v1/auth/me': { get: op('Who am I') },
        '/internal/v1/api-keys/verify': { post: op('Internal') },
      },
      { Problem: problem },
    );
    const chat = await serviceWith(
      serviceDocument(
        {
          '/api/v1/chats': { get: op('List chats', '#/components/schemas/Page') },
          '/v1/chat/completions': { post: op('OpenAI') },
        },
        { Page: { type: 'object', properties: { items: { type: 'array' } } }, Problem: problem },
      ),
    );
    const admin = await serviceWith(
      serviceDocument(
        { '/api/v1/admin/users': { get: op('Users', '#/components/schemas/Page') } },
        // Same name as chat's, different schema: kept apart under a service prefix.
        { Page: { type: 'object', properties: { rows: { type: 'array' } } } },
      ),
    );
    const gw = await startGateway({ AUTH_URL: auth.url, CHAT_URL: chat.url, ADMIN_URL: admin.url });
    const res = await gw.app.inject({ method: 'GET', url: '/docs/json' });
    expect(res.statusCode).toBe(200);
    const doc = res.json();
    expect(doc.openapi).toBe('3.1.0');
    expect(Object.keys(doc.paths)).toEqual([
      '/api/v1/admin/users',
      '/api/v1/auth/login',
      '/api/v1/auth/me',
      '/api/v1/chats',
      '/api/v1/health',
      '/v1/chat/completions',
    ]);
    expect(doc.paths['/internal/v1/api-keys/verify']).toBeUndefined();
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.security).toEqual([{ bearer: [] }]);
    expect(doc.paths['/api/v1/auth/login'].post.security).toEqual([]);
    expect(doc.paths['/api/v1/auth/me'].get.security).toBeUndefined();
    expect(doc.paths['/api/v1/health'].get.security).toEqual([]);
    expect(doc.components.schemas.Problem).toEqual(problem);
    expect(doc.components.schemas.Page.properties.items).toBeDefined();
    expect(doc.components.schemas.admin_Page.properties.rows).toBeDefined();
    expect(doc.paths['/api/v1/admin/users'].get.responses[200].content['application/json'].schema.$ref).toBe(
      '#/components/schemas/admin_Page',
    );
    expect(doc.paths['/api/v1/chats'].get.responses[200].content['application/json'].schema.$ref).toBe(
      '#/components/schemas/Page',
    );
    expect(doc['x-vivier-unavailable-services']).toEqual([]);
  });

  it('leaves out a service that is down and says so, instead of failing', async () => {
    const auth = await AuthStandIn.start();
    auth.openapi = serviceDocument({ '/api/v1/auth/login': { post: op('Log in') } });
    const gw = await startGateway({
      AUTH_URL: auth.url,
      CHAT_URL: 'http://127.0.0.1:1',
      ADMIN_URL: 'http://127.0.0.1:1',
    });
    const res = await gw.app.inject({ method: 'GET', url: '/docs/json' });
    expect(res.statusCode).toBe(200);
    const doc = res.json();
    expect(Object.keys(doc.paths)).toContain('/api/v1/auth/login');
    expect(doc['x-vivier-unavailable-services']).toEqual(['chat', 'admin']);
    expect(doc.info.description).toMatch(/chat, admin/);
  });

  it('caches the merged document for its TTL', async () => {
    const auth = await AuthStandIn.start();
    const chat = await serviceWith(serviceDocument({}));
    const gw = await startGateway({
      AUTH_URL: auth.url,
      CHAT_URL: chat.url,
      ADMIN_URL: chat.url,
      DOCS_CACHE_TTL_SECONDS: '60',
    });
    await Promise.all([1, 2, 3].map(() => gw.app.inject({ method: 'GET', url: '/docs/json' })));
    await gw.app.inject({ method: 'GET', url: '/docs/json' });
    expect(chat.requests.filter((r) => r.url === '/openapi.json')).toHaveLength(2); // chat and admin, once each
  });

  it('serves Swagger UI at /docs', async () => {
    const auth = await AuthStandIn.start();
    const gw = await startGateway({ AUTH_URL: auth.url });
    const page = await gw.app.inject({ method: 'GET', url: '/docs' });
    const html =
      page.statusCode === 302
        ? await gw.app.inject({ method: 'GET', url: page.headers.location as string })
        : page;
    expect(html.statusCode).toBe(200);
    expect(html.headers['content-type']).toMatch(/text\/html/);
    expect(html.body).toMatch(/swagger-ui/i);
    const script = await gw.app.inject({ method: 'GET', url: '/docs/static/swagger-initializer.js' });
    expect(script.statusCode).toBe(200);
  });
});
