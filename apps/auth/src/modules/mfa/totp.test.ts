import { describe, expect, it } from 'vitest';
import { base32Decode, base32Encode, hotp, matchingStep, normalizeRecoveryCode, newRecoveryCode, otpauthUrl, timeStep } from './totp.service';

// RFC 6238 Appendix B (SHA-1 seed "12345678901234567890"), 6-digit form of the 8-digit vectors.
const SEED = Buffer.from('12345678901234567890', 'ascii');
const VECTORS: Array<[number, string]> = [
  [59, '287082'],
  [1111111109, '081804'],
  [1111111111, '050471'],
  [1234567890, '005924'],
  [2000000000, '279037'],
  [20000000000, '353130'],
];

describe('TOTP (RFC 6238)', () => {
  it('matches the RFC 6238 test vectors', () => {
    for (const [seconds, code] of VECTORS) expect(hotp(SEED, timeStep(seconds * 1000))).toBe(code);
    expect(hotp(SEED, timeStep(59_000), 8)).toBe('94287082');
  });

  it('round-trips base32 (RFC 4648, no padding)', () => {
    expect(base32Encode(Buffer.from('foobar'))).toBe('MZXW6YTBOI');
    expect(base32Decode('MZXW6YTBOI').toString()).toBe('foobar');
    expect(base32Decode('mzxw 6ytb oi').toString()).toBe('foobar');
  });

  it('accepts ±1 step, not ±2, and never a step at or before the last one used', () => {
    const now = 1_000_000;
    const at = (step: number) => hotp(SEED, step);
    expect(matchingStep(SEED, at(now), now, null)).toBe(now);
    expect(matchingStep(SEED, at(now - 1), now, null)).toBe(now - 1);
    expect(matchingStep(SEED, at(now + 1), now, null)).toBe(now + 1);
    expect(matchingStep(SEED, at(now - 2), now, null)).toBeUndefined();
    expect(matchingStep(SEED, at(now + 2), now, null)).toBeUndefined();
    expect(matchingStep(SEED, at(now), now, now)).toBeUndefined();
    expect(matchingStep(SEED, at(now - 1), now, now)).toBeUndefined();
    expect(matchingStep(SEED, at(now + 1), now, now)).toBe(now + 1);
    expect(matchingStep(SEED, 'abcdef', now, null)).toBeUndefined();
  });

  it('writes an otpauth URL authenticator apps read', () => {
    const url = new URL(otpauthUrl('JBSWY3DPEHPK3PXP', 'ada@example.com', 'Vivier'));
    expect(url.protocol).toBe('otpauth:');
    expect(url.host).toBe('totp');
    expect(decodeURIComponent(url.pathname)).toBe('/Vivier:ada@example.com');
    expect(Object.fromEntries(url.searchParams)).toEqual({ secret: 'JBSWY3DPEHPK3PXP', issuer: 'Vivier', algorithm: 'SHA1', digits: '6', period: '30' });
  });

  it('makes 80-bit recovery codes that survive retyping', () => {
    const code = newRecoveryCode();
    expect(code).toMatch(/^[A-Z2-7]{4}(-[A-Z2-7]{4}){3}$/);
    expect(normalizeRecoveryCode(code.toLowerCase().replace(/-/g, ' '))).toBe(code.replace(/-/g, ''));
    expect(normalizeRecoveryCode('123456')).toBeUndefined();
  });
});
