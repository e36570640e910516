import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LogCapture } from '@vivier/service-kit/testing';
import { identityOf, startAuth, uniqueEmail, type AuthHarness } from './helpers';

// Secrets never reach the log output, at the most verbose level, on the paths that carry them:
// registration, login (right and wrong), a malformed body, refresh, API key creation and checks.

const logs = new LogCapture();
let auth: AuthHarness;

beforeAll(async () => {
  auth = await startAuth({ LOG_LEVEL: 'trace' }, { logStream: logs });
});
afterAll(async () => {
  await auth.close();
});

describe('log redaction', () => {
  it('never writes a password, token or API key to the log, whatever the request did', async () => {
    const password = `log-secret-${randomBytes(12).toString('hex')}`;
    const wrongPassword = `wrong-secret-${randomBytes(12).toString('hex')}`;
    const email = uniqueEmail('logs');
    const signedIn = await auth.register(email, { password });
    expect((await auth.login(email, password)).statusCode).toBe(200);
    expect((await auth.login(email, wrongPassword)).statusCode).toBe(401);

    // A body that is not JSON, with a password in it: the parser's message quotes the input.
    const malformedSecret = `malformed-secret-${randomBytes(12).toString('hex')}`;
    const malformed = await auth.app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      headers: { 'content-type': 'application/json' },
      payload: `{"email":"${email}","password":"${malformedSecret}" oops}`,
    });
    expect(malformed.statusCode).toBe(400);
    expect(malformed.json()).toMatchObject({ code: 'malformed_body' });
    expect(malformed.body).not.toContain(malformedSecret);

    const refreshed = await auth.call('POST', '/api/v1/auth/refresh', { body: { refreshToken: signedIn.refreshToken } });
    expect(refreshed.statusCode).toBe(200);
    const created = await auth.call('POST', '/api/v1/auth/api-keys', { identity: identityOf(signedIn.accessToken), body: { name: 'logs' } });
    expect(created.statusCode).toBe(201);
    const key = created.json<{ key: string }>().key;
    expect((await auth.internal('POST', '/internal/v1/api-keys/verify', { key })).statusCode).toBe(200);
    // A credential in a header of a request auth answers anyway.
    await auth.app.inject({ method: 'GET', url: '/.well-known/jwks.json', headers: { authorization: `Bearer ${key}`, 'x-api-key': key, cookie: `rt=${signedIn.refreshToken}` } });

    const output = logs.text();
    // The log did record these requests (so this test can fail), with their bodies' fields redacted.
    expect(logs.lines.filter((l) => l.msg === 'request completed').length).toBeGreaterThan(6);
    for (const secret of [password, wrongPassword, malformedSecret, key, signedIn.accessToken, signedIn.refreshToken, refreshed.json<{ refreshToken: string }>().refreshToken]) {
      expect(output).not.toContain(secret);
      expect(output).not.toContain(secret.slice(-16)); // nor a recognisable part of it
    }
  });
});
