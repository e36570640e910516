import { afterEach, describe, expect, it } from 'vitest';
import { Type } from '@sinclair/typebox';
import { LogCapture } from './testing';
import { createServiceApp, type ServiceApp } from './app';
import { HttpProblem, problems } from './errors';

let app: ServiceApp | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

async function build(logs = new LogCapture()) {
  app = await createServiceApp({ service: 'kit-test', logLevel: 'info', logStream: logs, defaultMetrics: false });
  app.post(
    '/things',
    { schema: { body: Type.Object({ name: Type.String({ minLength: 1 }), size: Type.Integer() }, { additionalProperties: false }) } },
    async (request) => ({ ok: true, name: request.body.name }),
  );
  app.get(
    '/page',
    { schema: { querystring: Type.Object({ limit: Type.Integer({ minimum: 1 }), archived: Type.Optional(Type.Boolean()) }) } },
    async (request) => ({ limit: request.query.limit, archived: request.query.archived ?? null }),
  );
  app.get('/teapot', async () => {
    throw new HttpProblem(409, 'email_taken', 'That email is registered.');
  });
  app.get('/limited', async () => {
    throw problems.rateLimited(7);
  });
  app.get('/boom', async () => {
    throw new Error('secret internal detail');
  });
  return { app, logs };
}

describe('service app', () => {
  it('refuses a NUL in JSON text (PostgreSQL cannot store it) and still refuses prototype poisoning', async () => {
    const { app } = await build();
    const post = (payload: string) => app.inject({ method: 'POST', url: '/things', headers: { 'content-type': 'application/json' }, payload });
    const nul = await post(JSON.stringify({ name: 'a\u0000b', size: 1 }));
    expect(nul.statusCode).toBe(400);
    expect(nul.json()).toMatchObject({ code: 'invalid_text', status: 400 });
    // A backslash followed by "u0000" is ordinary text.
    const text = await post(JSON.stringify({ name: '\\u0000', size: 1 }));
    expect(text.statusCode).toBe(200);
    expect(text.json()).toMatchObject({ name: '\\u0000' });
    const poisoned = await post('{"name":"x","size":1,"__proto__":{"admin":true}}');
    expect(poisoned.statusCode).toBe(400);
  });

  it('refuses half of a surrogate pair in JSON text and a NUL in the URL, and keeps whole pairs', async () => {
    const { app } = await build();
    const post = (payload: string) => app.inject({ method: 'POST', url: '/things', headers: { 'content-type': 'application/json' }, payload });
    for (const lone of ['{"name":"a\\ud800","size":1}', '{"name":"\\udc00b","size":1}', '{"name":"x","size":1,"\\uDBFFk":1}']) {
      const res = await post(lone);
      expect(res.statusCode, lone).toBe(400);
      expect(res.json()).toMatchObject({ code: 'invalid_text', status: 400 });
    }
    const pair = await post('{"name":"\\ud83d\\ude00","size":1}');
    expect(pair.statusCode).toBe(200);
    expect(pair.json()).toMatchObject({ name: '\u{1F600}' });
    // An escaped backslash followed by "ud800" is ordinary text.
    expect((await post('{"name":"\\\\ud800","size":1}')).statusCode).toBe(200);
    const query = await app.inject({ method: 'GET', url: '/page?limit=1&archived=%00' });
    expect(query.statusCode).toBe(400);
    expect(query.json()).toMatchObject({ code: 'invalid_text' });
  });

  it('answers validation errors as problem details with a stable code', async () => {
    const { app } = await build();
    const res = await app.inject({ method: 'POST', url: '/things', payload: { name: '', size: 'x' } });
    expect(res.statusCode).toBe(400);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    const body = res.json();
    expect(body).toMatchObject({ status: 400, code: 'validation_failed', title: 'Bad Request' });
    expect(body.type).toMatch(/validation-failed$/);
    expect(body.requestId).toBe(res.headers['x-request-id']);
    expect(body.errors.length).toBeGreaterThan(0);
  });

  it('takes JSON bodies as typed (no coercion) while query strings are coerced to the schema', async () => {
    const { app } = await build();
    const post = (payload: unknown) => app.inject({ method: 'POST', url: '/things', payload: payload as Record<string, unknown> });
    for (const payload of [{ name: 123, size: 1 }, { name: true, size: 1 }, { name: 'a', size: '1' }, { name: null, size: 1 }, { name: 'a', size: [1] }]) {
      const res = await post(payload);
      expect(res.statusCode, JSON.stringify(payload)).toBe(400);
      expect(res.json().code).toBe('validation_failed');
    }
    expect((await post({ name: 'a', size: 1 })).statusCode).toBe(200);
    const page = await app.inject({ method: 'GET', url: '/page?limit=20&archived=true' });
    expect(page.json()).toEqual({ limit: 20, archived: true });
    expect((await app.inject({ method: 'GET', url: '/page?limit=many' })).statusCode).toBe(400);
  });

  it('answers malformed JSON with malformed_body', async () => {
    const { app } = await build();
    const res = await app.inject({ method: 'POST', url: '/things', payload: '{"name":', headers: { 'content-type': 'application/json' } });
    expect(res.statusCode).toBe(400);
    expect(res.json().code).toBe('malformed_body');
  });

  it('answers an unsupported content type with 415', async () => {
    const { app } = await build();
    const res = await app.inject({ method: 'POST', url: '/things', payload: 'a=b', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect(res.statusCode).toBe(415);
    expect(res.json().code).toBe('unsupported_media_type');
  });

  it('keeps a domain error code and status', async () => {
    const { app } = await build();
    const res = await app.inject({ method: 'GET', url: '/teapot' });
    expect(res.statusCode).toBe(409);
    expect(res.json()).toMatchObject({ code: 'email_taken', detail: 'That email is registered.' });
  });

  it('sets Retry-After on rate-limit problems', async () => {
    const { app } = await build();
    const res = await app.inject({ method: 'GET', url: '/limited' });
    expect(res.statusCode).toBe(429);
    expect(res.headers['retry-after']).toBe('7');
    expect(res.json().code).toBe('rate_limited');
  });

  it('hides internal errors from the client but logs them with the request id', async () => {
    const { app, logs } = await build();
    const res = await app.inject({ method: 'GET', url: '/boom', headers: { 'x-request-id': 'req-boom-1' } });
    expect(res.statusCode).toBe(500);
    expect(res.json()).toMatchObject({ code: 'internal_error', requestId: 'req-boom-1' });
    expect(res.body).not.toContain('secret internal detail');
    expect(logs.lines.some((l) => l.requestId === 'req-boom-1' && l.level === 'error')).toBe(true);
  });

  it('answers unknown routes with a not_found problem', async () => {
    const { app } = await build();
    const res = await app.inject({ method: 'GET', url: '/nope' });
    expect(res.statusCode).toBe(404);
    expect(res.json().code).toBe('not_found');
  });

  it('echoes a well-formed x-request-id and replaces a malformed one', async () => {
    const { app } = await build();
    const echoed = await app.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'abc-123' } });
    expect(echoed.headers['x-request-id']).toBe('abc-123');
    const replaced = await app.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'bad id\n<script>' } });
    expect(replaced.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('exposes request duration histograms by route and status', async () => {
    const { app } = await build();
    await app.inject({ method: 'POST', url: '/things', payload: { name: 'a', size: 1 } });
    await app.inject({ method: 'GET', url: '/teapot' });
    const res = await app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.body).toMatch(/http_request_duration_seconds_count\{[^}]*route="\/things"[^}]*status_code="200"[^}]*\} 1/);
    expect(res.body).toMatch(/http_request_duration_seconds_count\{[^}]*route="\/teapot"[^}]*status_code="409"[^}]*\} 1/);
  });

  it('reports critical and non-critical dependencies on /ready', async () => {
    const { app } = await build();
    let dbUp = true;
    app.readiness.add({ name: 'db', critical: true, check: async () => { if (!dbUp) throw new Error('connection refused'); } });
    app.readiness.add({ name: 'kafka', critical: false, check: async () => { throw new Error('broker down'); } });
    const degraded = await app.inject({ method: 'GET', url: '/ready' });
    expect(degraded.statusCode).toBe(200);
    expect(degraded.json()).toMatchObject({ status: 'degraded', checks: { db: { status: 'up' }, kafka: { status: 'down', error: 'broker down' } } });
    dbUp = false;
    const down = await app.inject({ method: 'GET', url: '/ready' });
    expect(down.statusCode).toBe(503);
    expect(down.json().status).toBe('unavailable');
    expect((await app.inject({ method: 'GET', url: '/health' })).json()).toEqual({ status: 'ok' });
  });

  it('redacts credentials in logged request headers', async () => {
    const logs = new LogCapture();
    const { app } = await build(logs);
    await app.inject({ method: 'GET', url: '/health', headers: { authorization: 'Bearer vk_supersecret' } });
    app.log.info({ req: { headers: { authorization: 'Bearer vk_supersecret' } }, body: { password: 'hunter2hunter2' } }, 'probe');
    expect(logs.text()).not.toContain('vk_supersecret');
    expect(logs.text()).not.toContain('hunter2hunter2');
  });
});

describe('OpenAPI document', () => {
  it('describes the routes from their schemas and hides the operational ones', async () => {
    const { app } = await build();
    const res = await app.inject({ method: 'GET', url: '/openapi.json' });
    expect(res.statusCode).toBe(200);
    const doc = res.json();
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.paths['/things'].post.requestBody.content['application/json'].schema.required).toEqual(['name', 'size']);
    expect(doc.paths['/health']).toBeUndefined();
    expect(doc.paths['/metrics']).toBeUndefined();
  });
});
