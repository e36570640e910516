// SSRF guard for provider base URLs that an administrator typed in (QUALITY-BAR 16). URLs from
// the environment or the providers file are the operator's own and are not checked.
//
// Two layers, because either alone has a hole:
// - `assertSafeProviderUrl` (admin API, at save time): scheme, literal addresses in every numeric
//   spelling, and every address the name resolves to right now;
// - `createGuardedLookup` (undici connect hook, on every new connection): the addresses actually
//   connected to, so a DNS answer that changes after the check (rebinding) is caught too.
// Provider calls never follow redirects, so a public URL cannot bounce a request inward.
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';

export class UnsafeProviderUrlError extends Error {
  readonly code = 'ERR_UNSAFE_PROVIDER_URL';
  constructor(
    readonly url: string,
    readonly reason: string,
  ) {
    super(`provider URL refused: ${reason}`);
    this.name = 'UnsafeProviderUrlError';
  }
}

/** `PROVIDER_ALLOWED_HOSTS` → normalised host names and addresses. */
export function parseAllowedHosts(value: string | undefined): string[] {
  if (!value) return [];
  return value
    .split(',')
    .map((h) => h.trim())
    .filter((h) => h.length > 0)
    .map(normaliseHost);
}

/** Lower case, no trailing dot, no IPv6 brackets, IPv4 shorthand (`127.1`) in dotted-quad form. */
function normaliseHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.endsWith('.')) h = h.slice(0, -1);
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (isIP(h) === 6) return h;
  try {
    // The WHATWG parser canonicalises every IPv4 spelling the URL parser itself accepts.
    const parsed = new URL(`http://${h.includes(':') ? `[${h}]` : h}/`).hostname;
    return parsed.startsWith('[') ? parsed.slice(1, -1) : parsed;
  } catch {
    return h;
  }
}

// --- addresses --------------------------------------------------------------------------------

function ipv4ToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  return (((p[0] ?? 0) << 24) | ((p[1] ?? 0) << 16) | ((p[2] ?? 0) << 8) | (p[3] ?? 0)) >>> 0;
}

const V4_BLOCKS: ReadonlyArray<readonly [string, number, string]> = [
  ['0.0.0.0', 8, 'this-network address (0.0.0.0/8)'],
  ['10.0.0.0', 8, 'private address (10.0.0.0/8)'],
  ['100.64.0.0', 10, 'carrier-grade NAT address (100.64.0.0/10)'],
  ['127.0.0.0', 8, 'loopback address (127.0.0.0/8)'],
  ['169.254.0.0', 16, 'link-local address (169.254.0.0/16, cloud metadata)'],
  ['172.16.0.0', 12, 'private address (172.16.0.0/12)'],
  ['192.0.0.0', 24, 'IETF protocol assignment (192.0.0.0/24)'],
  ['192.0.2.0', 24, 'documentation address (192.0.2.0/24)'],
  ['192.88.99.0', 24, '6to4 relay anycast (192.88.99.0/24)'],
  ['192.168.0.0', 16, 'private address (192.168.0.0/16)'],
  ['198.18.0.0', 15, 'benchmarking address (198.18.0.0/15)'],
  ['198.51.100.0', 24, 'documentation address (198.51.100.0/24)'],
  ['203.0.113.0', 24, 'documentation address (203.0.113.0/24)'],
  ['224.0.0.0', 4, 'multicast address (224.0.0.0/4)'],
  ['240.0.0.0', 4, 'reserved address (240.0.0.0/4, broadcast included)'],
];

const V4_TABLE = V4_BLOCKS.map(([base, bits, why]) => {
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return { net: (ipv4ToInt(base) & mask) >>> 0, mask, why };
});

function blockedV4(value: number): string | undefined {
  for (const b of V4_TABLE) if ((value & b.mask) >>> 0 === b.net) return b.why;
  return undefined;
}

/** Eight 16-bit groups, or undefined when not IPv6 text. Accepts `::`, an IPv4 tail and a zone. */
function parseIpv6(input: string): number[] | undefined {
  let text = input.includes('%') ? input.slice(0, input.indexOf('%')) : input;
  if (isIP(text) !== 6) return undefined;
  let tail: number[] = [];
  if (text.includes('.')) {
    const idx = text.lastIndexOf(':');
    const v = ipv4ToInt(text.slice(idx + 1));
    tail = [v >>> 16, v & 0xffff];
    text = text.slice(0, idx + 1);
    if (!text.endsWith('::')) text = text.slice(0, -1);
  }
  const pieces = text.split('::');
  const head = pieces[0] ? pieces[0].split(':') : [];
  const rest = pieces[1] ? pieces[1].split(':') : [];
  const fill = pieces.length > 1 ? 8 - head.length - rest.length - tail.length : 0;
  const groups = [
    ...head.map((h) => parseInt(h, 16)),
    ...new Array<number>(Math.max(0, fill)).fill(0),
    ...rest.map((h) => parseInt(h, 16)),
    ...tail,
  ];
  return groups.length === 8 ? groups : undefined;
}

function embeddedV4(hi: number, lo: number): number {
  return ((hi << 16) | lo) >>> 0;
}

function blockedV6(g: number[]): string | undefined {
  const [g0 = 0, g1 = 0, g2 = 0, g3 = 0, g4 = 0, g5 = 0, g6 = 0, g7 = 0] = g;
  const v4 = embeddedV4(g6, g7);
  if (g0 === 0 && g1 === 0 && g2 === 0 && g3 === 0 && g4 === 0) {
    if (g5 === 0xffff) {
      const why = blockedV4(v4);
      return why ? `IPv4-mapped IPv6 ${why}` : undefined;
    }
    if (g5 === 0) {
      if (g6 === 0 && g7 === 0) return 'unspecified address (::)';
      if (g6 === 0 && g7 === 1) return 'loopback address (::1)';
      // Deprecated IPv4-compatible form: judged by the IPv4 address it carries.
      const why = blockedV4(v4);
      return why ? `IPv4-compatible IPv6 ${why}` : undefined;
    }
  }
  if (g0 === 0x64 && g1 === 0xff9b) {
    if (g2 === 0 && g3 === 0 && g4 === 0 && g5 === 0) {
      const why = blockedV4(v4);
      return why ? `NAT64 ${why}` : undefined;
    }
    if (g2 === 1) return 'local-use NAT64 address (64:ff9b:1::/48)';
  }
  if (g0 === 0x2002) {
    const why = blockedV4(embeddedV4(g1, g2));
    return why ? `6to4 ${why}` : undefined;
  }
  if (g0 === 0x2001 && g1 === 0) return 'Teredo address (2001::/32)';
  if (g0 === 0x2001 && g1 === 0x0db8) return 'documentation address (2001:db8::/32)';
  if (g0 === 0x2001 && (g1 & 0xffe0) === 0x0020) return 'ORCHIDv2 address (2001:20::/28)';
  if (g0 === 0x0100 && g1 === 0 && g2 === 0 && g3 === 0) return 'discard-only address (100::/64)';
  if ((g0 & 0xfe00) === 0xfc00) return 'unique local address (fc00::/7)';
  if ((g0 & 0xffc0) === 0xfe80) return 'link-local address (fe80::/10)';
  if ((g0 & 0xffc0) === 0xfec0) return 'site-local address (fec0::/10)';
  if ((g0 & 0xff00) === 0xff00) return 'multicast address (ff00::/8)';
  return undefined;
}

/** Why an address may not be reached from a provider call, or undefined when it is public. */
export function blockedAddressReason(address: string): string | undefined {
  const kind = isIP(address.includes('%') ? address.slice(0, address.indexOf('%')) : address);
  if (kind === 4) return blockedV4(ipv4ToInt(address));
  if (kind === 6) {
    const groups = parseIpv6(address);
    return groups ? blockedV6(groups) : 'unparseable IPv6 address';
  }
  return 'not an IP address';
}

// --- URLs -------------------------------------------------------------------------------------

function refuse(url: string, reason: string): never {
  throw new UnsafeProviderUrlError(url, reason);
}

/**
 * Everything that can be decided without DNS: scheme, credentials, literal addresses (every
 * numeric spelling is canonicalised by the URL parser first) and `localhost` names. Returns the
 * parsed URL and whether its host is allowlisted.
 */
export function checkProviderUrlSyntax(
  url: string,
  allowlist: readonly string[],
): { url: URL; allowed: boolean; host: string } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return refuse(url, 'not a valid URL');
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
    refuse(url, `scheme ${parsed.protocol} is not allowed (http or https only)`);
  if (parsed.username || parsed.password)
    refuse(url, 'credentials in the URL are not allowed (use the API key field)');
  const host = normaliseHost(parsed.hostname);
  if (host.length === 0) refuse(url, 'no host');
  const allowed = allowlist.map(normaliseHost).includes(host);
  if (allowed) return { url: parsed, allowed, host };
  if (isIP(host) !== 0) {
    const why = blockedAddressReason(host);
    if (why) refuse(url, `${host} is a ${why}`);
  } else if (host === 'localhost' || host.endsWith('.localhost')) {
    refuse(url, `${host} is a loopback name`);
  }
  return { url: parsed, allowed, host };
}

export type HostResolver = (hostname: string) => Promise<ReadonlyArray<{ address: string }>>;

const systemResolver: HostResolver = (hostname) =>
  new Promise((resolve, reject) => {
    dnsLookup(hostname, { all: true, verbatim: true }, (err, addresses) =>
      err ? reject(err) : resolve(addresses),
    );
  });

/**
 * Refuses a provider base URL that could reach the platform's own network: loopback, private,
 * link-local (cloud metadata), CGNAT, multicast and reserved ranges, IPv6 loopback/ULA/link-local
 * and IPv4 addresses hidden in IPv6 forms, in any numeric spelling, and host names that resolve
 * to any of these (every address is checked). Hosts in `allowlist` (`PROVIDER_ALLOWED_HOSTS`)
 * pass. Only http and https. Throws {@link UnsafeProviderUrlError}; resolves to the parsed URL.
 */
export async function assertSafeProviderUrl(
  url: string,
  allowlist: readonly string[],
  options: { resolve?: HostResolver } = {},
): Promise<URL> {
  const { url: parsed, allowed, host } = checkProviderUrlSyntax(url, allowlist);
  if (allowed || isIP(host) !== 0) return parsed;
  let addresses: ReadonlyArray<{ address: string }>;
  try {
    addresses = await (options.resolve ?? systemResolver)(host);
  } catch (err) {
    return refuse(url, `${host} does not resolve (${(err as Error).message})`);
  }
  if (addresses.length === 0) refuse(url, `${host} does not resolve`);
  const allowedSet = new Set(allowlist.map(normaliseHost));
  for (const { address } of addresses) {
    if (allowedSet.has(normaliseHost(address))) continue;
    const why = blockedAddressReason(address);
    if (why) refuse(url, `${host} resolves to ${address}, a ${why}`);
  }
  return parsed;
}

/**
 * A `lookup` for undici's connector: resolves like the system does, then refuses the connection
 * when any address is not public (unless the host or address is allowlisted). Runs for every new
 * socket, so the address connected to is always one that was checked.
 */
export function createGuardedLookup(allowlist: readonly string[]): LookupFunction {
  const allowed = new Set(allowlist.map(normaliseHost));
  return (hostname: string, options: LookupOptions, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
      if (err) {
        callback(err, '', 0);
        return;
      }
      const host = normaliseHost(hostname);
      if (!allowed.has(host)) {
        for (const { address } of addresses) {
          if (allowed.has(normaliseHost(address))) continue;
          const why = blockedAddressReason(address);
          if (why) {
            callback(
              new UnsafeProviderUrlError(hostname, `${hostname} resolves to ${address}, a ${why}`),
              '',
              0,
            );
            return;
          }
        }
      }
      if (options.all) callback(null, addresses);
      else if (addresses[0]) callback(null, addresses[0].address, addresses[0].family);
      else callback(Object.assign(new Error(`${hostname} does not resolve`), { code: 'ENOTFOUND' }), '', 0);
    });
  };
}
