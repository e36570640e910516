import { describe, expect, it } from 'vitest';
import { ipPartition } from './client-ip';

describe('client address partitions', () => {
  it('keys IPv4 by address and IPv6 by its /64 (an IPv4-mapped address as IPv4)', () => {
    expect(ipPartition('203.0.113.9')).toBe('203.0.113.9');
    expect(ipPartition('::ffff:203.0.113.9')).toBe('203.0.113.9');
    expect(ipPartition('2001:db8:aa:bb:1:2:3:4')).toBe('2001:db8:aa:bb::/64');
    expect(ipPartition('2001:0DB8:00aa:00bb::99')).toBe('2001:db8:aa:bb::/64');
    expect(ipPartition('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(ipPartition('::1')).toBe('0:0:0:0::/64');
    expect(ipPartition('2001:db8:aa:bb:ffff::1')).toBe(ipPartition('2001:db8:aa:bb:1::2'));
  });
});
