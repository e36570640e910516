import { describe, expect, it } from 'vitest';
import {
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
});
