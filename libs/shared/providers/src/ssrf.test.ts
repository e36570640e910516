import { describe, expect, it } from 'vitest';
import {
  assertSafeProviderUrl,
  blockedAddressReason,
  createGuardedLookup,
  parseAllowedHosts,
  UnsafeProviderUrlError,
} from './ssrf.js';

// A fake DNS so the table does not depend on the network.
const zone: Record<string, string[]> = {
  'api.openai.com': ['162.159.140.245', '2606:4700::6812:1234'],
  'rebind.example': ['93.184.216.34', '10.0.0.5'],
  'metadata.example': ['169.254.169.254'],
  'v6private.example': ['fd00::1'],
  'mapped.example': ['::ffff:127.0.0.1'],
  'internal.corp': ['10.1.2.3'],
};
const resolve = async (host: string) => {
  const addresses = zone[host];
  if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  return addresses.map((address) => ({ address }));
};

const check = (url: string, allowlist: string[] = []) => assertSafeProviderUrl(url, allowlist, { resolve });

describe('assertSafeProviderUrl', () => {
  const accepted: Array<[string, string[]?]> = [
    ['https://api.openai.com/v1'],
    ['http://api.openai.com:8080/v1'],
    ['https://8.8.8.8/v1'],
    ['https://[2606:4700::6812:1234]/v1'],
    ['http://internal.corp:8000/v1', ['internal.corp']],
    ['http://10.0.0.7:11434', ['10.0.0.7']],
    ['http://127.1:8000', ['127.0.0.1']],
    ['http://localhost:11434', ['LOCALHOST']],
  ];
  it.each(accepted)('accepts %s (allowlist %j)', async (url, allowlist) => {
    await expect(check(url, allowlist)).resolves.toBeInstanceOf(URL);
  });

  const refused: Array<[string, RegExp]> = [
    ['ftp://api.openai.com/', /scheme ftp:/],
    ['file:///etc/passwd', /scheme file:/],
    ['gopher://127.0.0.1:6379/_PING', /scheme/],
    ['not a url', /not a valid URL/],
    ['http://user:pw@api.openai.com/', /credentials/],
    ['http://127.0.0.1:8080', /loopback/],
    ['http://127.1', /loopback/],
    ['http://2130706433/', /loopback/],
    ['http://0x7f000001/', /loopback/],
    ['http://0177.0.0.1/', /loopback/],
    ['http://0.0.0.0:80', /this-network/],
    ['http://10.0.0.1', /private/],
    ['http://172.16.5.4', /private/],
    ['http://172.31.255.255', /private/],
    ['http://192.168.1.1', /private/],
    ['http://169.254.169.254/latest/meta-data/', /link-local/],
    ['http://100.64.0.1', /carrier-grade NAT/],
    ['http://224.0.0.1', /multicast/],
    ['http://255.255.255.255', /reserved/],
    ['http://240.0.0.1', /reserved/],
    ['http://[::1]:8080', /loopback/],
    ['http://[::]:8080', /unspecified/],
    ['http://[fc00::1]', /unique local/],
    ['http://[fd12:3456::1]', /unique local/],
    ['http://[fe80::1]', /link-local/],
    ['http://[::ffff:127.0.0.1]', /IPv4-mapped IPv6 loopback/],
    ['http://[::ffff:a9fe:a9fe]', /IPv4-mapped IPv6 link-local/],
    ['http://[::ffff:10.0.0.1]', /IPv4-mapped IPv6 private/],
    ['http://[64:ff9b::7f00:1]', /NAT64 loopback/],
    ['http://[2002:7f00:1::1]', /6to4 loopback/],
    ['http://[ff02::1]', /multicast/],
    ['http://localhost:11434', /loopback name/],
    ['http://ollama.localhost', /loopback name/],
    ['http://rebind.example/v1', /resolves to 10\.0\.0\.5, a private/],
    ['http://metadata.example/', /169\.254\.169\.254, a link-local/],
    ['http://v6private.example/', /unique local/],
    ['http://mapped.example/', /IPv4-mapped/],
    ['http://nowhere.example/', /does not resolve/],
    ['http://internal.corp/', /private/],
  ];
  it.each(refused)('refuses %s', async (url, reason) => {
    const error = await check(url).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnsafeProviderUrlError);
    expect((error as UnsafeProviderUrlError).message).toMatch(reason);
  });

  it('accepts a resolved private address that is itself allowlisted', async () => {
    await expect(check('http://rebind.example/', ['10.0.0.5'])).resolves.toBeInstanceOf(URL);
  });
});

describe('blockedAddressReason', () => {
  it('judges addresses as DNS returns them', () => {
    expect(blockedAddressReason('8.8.8.8')).toBeUndefined();
    expect(blockedAddressReason('2001:4860:4860::8888')).toBeUndefined();
    expect(blockedAddressReason('::ffff:8.8.8.8')).toBeUndefined();
    expect(blockedAddressReason('fe80::1%eth0')).toMatch(/link-local/);
    expect(blockedAddressReason('::ffff:192.168.0.1')).toMatch(/private/);
    expect(blockedAddressReason('172.15.255.255')).toBeUndefined();
    expect(blockedAddressReason('172.32.0.0')).toBeUndefined();
  });
});

describe('createGuardedLookup', () => {
  it('refuses a connection to a name that resolves to loopback, and passes an allowlisted one', async () => {
    const lookup = (allow: string[]) =>
      new Promise<unknown>((resolveLookup) =>
        createGuardedLookup(allow)('localhost', { all: true }, (err, addresses) =>
          resolveLookup(err ?? addresses),
        ),
      );
    expect(await lookup([])).toBeInstanceOf(UnsafeProviderUrlError);
    expect(Array.isArray(await lookup(['localhost']))).toBe(true);
  });

  it('parses PROVIDER_ALLOWED_HOSTS', () => {
    expect(parseAllowedHosts(' Ollama.Internal. , 10.0.0.7,,[::1] ')).toEqual([
      'ollama.internal',
      '10.0.0.7',
      '::1',
    ]);
    expect(parseAllowedHosts(undefined)).toEqual([]);
  });
});
