import { describe, expect, it } from 'vitest';
import { RateLimitPolicies, ipPartition, rateLimitHeader } from './rate-limit.policy';

describe('rate-limit partition keys and header values', () => {
  it('keys IPv4 by address and IPv6 by its /64 (an IPv4-mapped address as IPv4)', () => {
    expect(ipPartition('203.0.113.9')).toBe('203.0.113.9');
    expect(ipPartition('::ffff:203.0.113.9')).toBe('203.0.113.9');
    expect(ipPartition('2001:db8:aa:bb:1:2:3:4')).toBe('2001:db8:aa:bb::/64');
    expect(ipPartition('2001:0DB8:00aa:00bb::99')).toBe('2001:db8:aa:bb::/64');
    expect(ipPartition('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(ipPartition('::1')).toBe('0:0:0:0::/64');
    expect(ipPartition('2001:db8:aa:bb:ffff::1')).toBe(ipPartition('2001:db8:aa:bb:1::2'));
  });

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
