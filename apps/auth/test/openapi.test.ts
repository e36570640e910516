import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAuth, type AuthHarness } from './helpers';

let auth: AuthHarness;
beforeAll(async () => {
  auth = await startAuth();
});
afterAll(async () => {
  await auth.close();
});

describe('OpenAPI document of the auth service', () => {
  it('describes every public auth route of API.md from the route schemas, and hides the internal ones', async () => {
    const res = await auth.app.inject({ method: 'GET', url: '/openapi.json' });
    expect(res.statusCode).toBe(200);
    const doc = res.json<{ paths: Record<string, Record<string, { responses: Record<string, unknown> }>> }>();
    const routes = Object.entries(doc.paths).flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`));
    expect(routes.sort()).toEqual(
      [
        'POST /api/v1/auth/register',
        'POST /api/v1/auth/login',
        'POST /api/v1/auth/refresh',
        'POST /api/v1/auth/logout',
        'POST /api/v1/auth/logout-all',
        'GET /api/v1/auth/me',
        'POST /api/v1/auth/password',
        'GET /api/v1/auth/sessions',
        'DELETE /api/v1/auth/sessions/{id}',
        'POST /api/v1/auth/mfa/totp/setup',
        'POST /api/v1/auth/mfa/totp/enable',
        'POST /api/v1/auth/mfa/totp/disable',
        'GET /api/v1/auth/oauth/{provider}/start',
        'GET /api/v1/auth/oauth/{provider}/callback',
        'POST /api/v1/auth/oauth/mfa',
        'POST /api/v1/auth/api-keys',
        'GET /api/v1/auth/api-keys',
        'DELETE /api/v1/auth/api-keys/{id}',
        'GET /.well-known/jwks.json',
      ].sort(),
    );
    expect(Object.keys(doc.paths['/api/v1/auth/register']!.post!.responses).sort()).toEqual(['201', '400', '409', '429']);
    expect(Object.keys(doc.paths['/api/v1/auth/login']!.post!.responses)).toEqual(expect.arrayContaining(['200', '401', '429']));
  });
});
