import { isIPv6 } from 'node:net';

/**
 * The partition key of a client address: IPv4 as is, IPv6 by its /64 (one subscriber usually
 * holds a whole /64, so counting single addresses would let it rotate through 2^64 of them).
 */
export function ipPartition(ip: string): string {
  if (ip.startsWith('::ffff:') && ip.includes('.')) return ip.slice(7);
  if (!isIPv6(ip)) return ip;
  const [head = '', tail = ''] = ip.split('::');
  const headParts = head === '' ? [] : head.split(':');
  const tailParts = ip.includes('::') ? (tail === '' ? [] : tail.split(':')) : [];
  const parts = ip.includes('::')
    ? [...headParts, ...Array(8 - headParts.length - tailParts.length).fill('0'), ...tailParts]
    : headParts;
  return `${parts
    .slice(0, 4)
    .map((p) => p.toLowerCase().replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}
