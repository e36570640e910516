import { describe, expect, it } from 'vitest';
import { IDENTITY_HEADER, IDENTITY_SIGNATURE_HEADER, signIdentity, verifyIdentity, type Identity } from './identity';

const secret = 'x'.repeat(32);
const identity: Identity = { sub: '6f1c1d9e-3f7a-4c55-9a51-2f1d0c6a7b10', role: 'user', sid: 's1', kind: 'access_token', exp: 2_000_000_000 };

describe('gateway identity headers', () => {
  it('round-trips a signed identity', () => {
    expect(verifyIdentity(signIdentity(identity, secret), secret, 1_900_000_000)).toEqual(identity);
  });

  it('refuses a forged, re-signed, tampered or expired identity', () => {
    const headers = signIdentity(identity, secret);
    expect(verifyIdentity({ [IDENTITY_HEADER]: headers[IDENTITY_HEADER] }, secret)).toBeUndefined();
    expect(verifyIdentity(signIdentity(identity, 'y'.repeat(32)), secret)).toBeUndefined();
    const admin = Buffer.from(JSON.stringify({ ...identity, role: 'admin' })).toString('base64url');
    expect(verifyIdentity({ [IDENTITY_HEADER]: admin, [IDENTITY_SIGNATURE_HEADER]: headers[IDENTITY_SIGNATURE_HEADER] }, secret)).toBeUndefined();
    expect(verifyIdentity(signIdentity({ ...identity, exp: 10 }, secret), secret, 11)).toBeUndefined();
  });
});
