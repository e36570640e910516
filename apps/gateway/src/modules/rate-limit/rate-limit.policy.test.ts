import { describe, expect, it } from 'vitest';
import { RateLimitPolicies, rateLimitHeader } from './rate-limit.policy';

describe('rate-limit header values', () => {
  it('formats the policies once and the service limits per response', () => {
    const policies = new RateLimitPolicies({
      enabled: true,
      windowSeconds: 60,
      perUser: 600,
      perIp: 120,
      perIpAuthenticated: 3000,
    });
    expect(policies.anonymousPolicyHeader).toBe('"ip";q=120;w=60');
    expect(policies.authenticatedPolicyHeader).toBe('"user";q=600;w=60, "ip";q=3000;w=60');
    expect(rateLimitHeader([{ policy: 'user', remaining: 5, resetSeconds: 2 }])).toBe('"user";r=5;t=2');
    const off = new RateLimitPolicies({
      enabled: false,
      windowSeconds: 60,
      perUser: 1,
      perIp: 1,
      perIpAuthenticated: 1,
    });
    expect(off.limitsFor(undefined, '127.0.0.1')).toEqual([]);
  });
});
