import { describe, expect, it } from 'vitest';
import { createServiceApp } from './app';
import { LogCapture } from './testing';
import {
  ContextVerifier,
  identityPlugin,
  CONTEXT_HEADER,
  CONTEXT_SIGNATURE_HEADER,
  signContext,
  signInternalCall,
  verifyContext,
  verifyInternalCall,
  type GatewayContext,
} from './identity';

const secret = 'x'.repeat(32);
const context: GatewayContext = {
  ip: '203.0.113.9',
  userAgent: 'test',
  identity: { sub: '6f1c1d9e-3f7a-4c55-9a51-2f1d0c6a7b10', role: 'user', sid: 's1', kind: 'access_token' },
  exp: 2_000_000_000,
};

describe('gateway context headers', () => {
  it('round-trips a signed context', () => {
    expect(verifyContext(signContext(context, secret), secret, 1_900_000_000)).toEqual(context);
  });

  it('refuses a forged, re-signed, tampered or expired context', () => {
    const headers = signContext(context, secret);
    expect(verifyContext({ [CONTEXT_HEADER]: headers[CONTEXT_HEADER] }, secret)).toBeUndefined();
    expect(verifyContext(signContext(context, 'y'.repeat(32)), secret)).toBeUndefined();
    const admin = Buffer.from(JSON.stringify({ ...context, identity: { ...context.identity, role: 'admin' } })).toString('base64url');
    expect(verifyContext({ [CONTEXT_HEADER]: admin, [CONTEXT_SIGNATURE_HEADER]: headers[CONTEXT_SIGNATURE_HEADER] }, secret)).toBeUndefined();
    expect(verifyContext(signContext({ ...context, exp: 10 }, secret), secret, 11)).toBeUndefined();
  });

  it('accepts internal calls only with a fresh signature of the shared secret', () => {
    expect(verifyInternalCall(signInternalCall(secret), secret)).toBe(true);
    expect(verifyInternalCall(signInternalCall('z'.repeat(32)), secret)).toBe(false);
    expect(verifyInternalCall(signInternalCall(secret, 1000), secret, 2000)).toBe(false);
    expect(verifyInternalCall({}, secret)).toBe(false);
  });

  it('verifies a context pair once, then knows it until it expires', () => {
    let verified = 0;
    const verifier = new ContextVerifier(secret, 4096, (...args) => {
      verified += 1;
      return verifyContext(...args);
    });
    const headers = signContext(context, secret);
    expect(verifier.context(headers, 1_900_000_000)).toEqual(context);
    expect(verifier.context({ ...headers }, 1_900_000_001)).toEqual(context);
    expect(verified).toBe(1);
    // Known or not, an expired context is refused.
    expect(verifier.context(headers, 2_000_000_001)).toBeUndefined();
    // The same signature with another payload is verified, and refused.
    const admin = Buffer.from(JSON.stringify({ ...context, identity: { ...context.identity, role: 'admin' } })).toString('base64url');
    expect(verifier.context({ [CONTEXT_HEADER]: admin, [CONTEXT_SIGNATURE_HEADER]: headers[CONTEXT_SIGNATURE_HEADER] }, 1_900_000_000)).toBeUndefined();
    expect(verified).toBe(2);
    // A refused pair is not remembered.
    expect(verifier.context({ [CONTEXT_HEADER]: admin, [CONTEXT_SIGNATURE_HEADER]: headers[CONTEXT_SIGNATURE_HEADER] }, 1_900_000_000)).toBeUndefined();
    expect(verified).toBe(3);
  });

  it('holds at most its bound of pairs', () => {
    let verified = 0;
    const verifier = new ContextVerifier(secret, 2, (...args) => {
      verified += 1;
      return verifyContext(...args);
    });
    const pairs = [1, 2, 3].map((n) => signContext({ ...context, ip: `203.0.113.${n}` }, secret));
    for (const pair of pairs) verifier.context(pair, 1_900_000_000);
    expect(verified).toBe(3);
    // The third pair started the memory again: the first is verified anew, the third is known.
    verifier.context(pairs[2]!, 1_900_000_000);
    expect(verified).toBe(3);
    verifier.context(pairs[0]!, 1_900_000_000);
    expect(verified).toBe(4);
  });

  it("puts the caller's user id on every line its request and reply log, and on no other request's", async () => {
    const logs = new LogCapture();
    const app = await createServiceApp({ service: 'kit-test', logLevel: 'info', logStream: logs, defaultMetrics: false });
    try {
      await app.register(identityPlugin, { secret });
      app.get('/who', async (request, reply) => {
        request.log.warn('from the request');
        reply.log.warn('from the reply');
        return { ok: true };
      });
      const signed = await app.inject({ method: 'GET', url: '/who', headers: signContext(context, secret) });
      const anonymous = await app.inject({ method: 'GET', url: '/who' });
      expect([signed.statusCode, anonymous.statusCode]).toEqual([200, 200]);
      // Fastify's own "request completed" line included: it is written through reply.log.
      const lines = (id: unknown) =>
        logs.lines.filter((l) => l.requestId === id && l.msg !== 'incoming request').map((l) => [l.msg, l.userId]);
      const user = context.identity!.sub;
      expect(lines(signed.headers['x-request-id'])).toEqual([['from the request', user], ['from the reply', user], ['request completed', user]]);
      expect(lines(anonymous.headers['x-request-id'])).toEqual([['from the request', undefined], ['from the reply', undefined], ['request completed', undefined]]);
    } finally {
      await app.close();
    }
  });
});
