import { createPublicKey } from 'node:crypto';
import { base64url, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifyContext, type GatewayContext } from '@vivier/service-kit';
import {
  AuthStandIn,
  SECRET,
  bearer,
  cleanup,
  eventually,
  standIn,
  startGateway,
  type Gateway,
  type StandIn,
} from './support';

afterEach(cleanup);

let auth: AuthStandIn;
let chat: StandIn;
let gw: Gateway;
/** The signed context the chat stand-in received, verified as a service would. */
let contexts: Array<GatewayContext | undefined>;

beforeEach(async () => {
  auth = await AuthStandIn.start();
  contexts = [];
  chat = await standIn((req, res) => {
    contexts.push(verifyContext(req.headers, SECRET));
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"items":[]}');
  });
  gw = await startGateway({ AUTH_URL: auth.url, CHAT_URL: chat.url, JWKS_REFETCH_COOLDOWN_SECONDS: '30' });
  await eventually(() => auth.jwksRequests === 1); // the start-up prefetch
});

const call = (token: string) =>
  gw.app.inject({ method: 'GET', url: '/api/v1/chats', headers: bearer(token) });

function unsigned(header: Record<string, unknown>, claims: Record<string, unknown>): string {
  const part = (value: unknown) => base64url.encode(JSON.stringify(value));
  return `${part(header)}.${part(claims)}.`;
}

function claims(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: 'vivier',
    aud: 'vivier-api',
    sub: 'u-attacker',
    sid: 's-1',
    role: 'admin',
    iat: now,
    exp: now + 600,
    jti: 'j',
    ...overrides,
  };
}

async function expectRejected(token: string, detail?: RegExp): Promise<void> {
  const res = await call(token);
  expect(res.statusCode).toBe(401);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(res.json()).toMatchObject({ code: 'invalid_token', status: 401 });
  if (detail) expect(res.json().detail).toMatch(detail);
  expect(res.headers['www-authenticate']).toMatch(/^Bearer error="invalid_token"/);
}

describe('access tokens at the gateway', () => {
  it('forwards a valid token with a signed context carrying the identity, client IP and user agent', async () => {
    const token = await auth.sign({ sub: 'u-42', sid: 's-42', role: 'user' });
    const res = await gw.app.inject({
      method: 'GET',
      url: '/api/v1/chats',
      headers: { ...bearer(token), 'user-agent': 'vitest/1' },
    });
    expect(res.statusCode).toBe(200);
    expect(contexts).toHaveLength(1);
    const context = contexts[0]!;
    expect(context).toMatchObject({
      ip: '127.0.0.1',
      userAgent: 'vitest/1',
      identity: { sub: 'u-42', sid: 's-42', role: 'user', kind: 'access_token' },
    });
    expect(context.exp).toBeGreaterThan(Date.now() / 1000);
    expect(context.exp).toBeLessThanOrEqual(Date.now() / 1000 + 61);
    // The service cannot be fooled by a context signed with another secret.
    expect(verifyContext(chat.requests[0]!.headers, 'another-secret-another-secret-another')).toBeUndefined();
  });

  it('refuses alg "none" without fetching anything', async () => {
    await expectRejected(
      unsigned({ alg: 'none', typ: 'at+jwt', kid: auth.currentKid }, claims()),
      /algorithm/,
    );
    await expectRejected(unsigned({ alg: 'none', typ: 'at+jwt', kid: 'unknown-kid' }, claims()));
    expect(auth.jwksRequests).toBe(1);
    expect(chat.requests).toEqual([]);
  });

  it('refuses an HS256 token signed with the public key as the HMAC secret', async () => {
    const publicJwk = auth.keys.get(auth.currentKid)!.publicJwk;
    const pem = createPublicKey({
      key: { kty: publicJwk.kty!, crv: publicJwk.crv!, x: publicJwk.x! },
      format: 'jwk',
    })
      .export({ type: 'spki', format: 'pem' })
      .toString();
    for (const secret of [
      new TextEncoder().encode(pem),
      new TextEncoder().encode(JSON.stringify(publicJwk)),
      base64url.decode(publicJwk.x!),
    ]) {
      const forged = await new SignJWT(claims())
        .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: auth.currentKid })
        .sign(secret);
      await expectRejected(forged, /algorithm/);
    }
    expect(auth.jwksRequests).toBe(1);
    expect(chat.requests).toEqual([]);
  });

  it('refuses a wrong audience, a wrong issuer, a wrong typ and incomplete claims', async () => {
    await expectRejected(await auth.sign({ aud: 'another-api' }));
    await expectRejected(await auth.sign({ iss: 'https://evil.example' }));
    await expectRejected(await auth.sign({ typ: 'JWT' }), /not an access token/);
    await expectRejected(await auth.sign({ role: 'root' }), /claims/);
    expect(auth.jwksRequests).toBe(1);
    expect(chat.requests).toEqual([]);
  });

  it('refuses an expired token (beyond the small clock tolerance) and accepts one just inside it', async () => {
    const now = Math.floor(Date.now() / 1000);
    await expectRejected(await auth.sign({ iat: now - 1000, expiresIn: -60 }), /expired/);
    expect((await call(await auth.sign({ iat: now - 1000, expiresIn: -2 }))).statusCode).toBe(200);
    await expectRejected(await auth.sign({ iat: now + 3600 }), /future/);
  });

  it('never fetches a jku or x5u URL, nor trusts an embedded jwk: 401 and no outbound request', async () => {
    const attacker = await standIn((_req, res) => res.end('{"keys":[]}'));
    const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
    const attackerJwk = { ...(await exportJWK(publicKey)), kid: 'evil' };
    const headers = [
      { jku: `${attacker.url}/jwks.json`, kid: 'evil' },
      { jku: `${attacker.url}/jwks.json`, kid: auth.currentKid },
      { x5u: `${attacker.url}/cert.pem`, kid: 'evil' },
      { jwk: attackerJwk, kid: 'evil' },
    ];
    for (const header of headers) {
      const forged = await new SignJWT(claims())
        .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', ...header })
        .sign(privateKey);
      await expectRejected(forged, /references its own key/);
    }
    // Even a genuine token carrying a jku is refused: auth never sets one.
    await expectRejected(await auth.sign({ header: { jku: `${attacker.url}/jwks.json` } }));
    expect(attacker.requests).toEqual([]);
    expect(auth.jwksRequests).toBe(1);
    expect(chat.requests).toEqual([]);
  });

  it('refetches the JWKS once for an unknown kid, then answers 401 without refetching again', async () => {
    const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
    const sign = (kid: string) =>
      new SignJWT(claims()).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid }).sign(privateKey);
    await expectRejected(await sign('unknown-1'), /unknown key/);
    expect(auth.jwksRequests).toBe(2);
    // A flood of random kids within the cooldown costs auth nothing more.
    const flood = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => call(await sign(`random-${i}`))),
    );
    expect(flood.every((r) => r.statusCode === 401)).toBe(true);
    expect(auth.jwksRequests).toBe(2);
    expect(chat.requests).toEqual([]);
  });

  it('accepts tokens of a rotated-in key after one refetch, and the old key until it is withdrawn', async () => {
    const oldToken = await auth.sign({ sub: 'u-old' });
    expect((await call(oldToken)).statusCode).toBe(200);
    await auth.rotate();
    const newToken = await auth.sign({ sub: 'u-new' });
    expect((await call(newToken)).statusCode).toBe(200);
    expect(auth.jwksRequests).toBe(2);
    expect((await call(oldToken)).statusCode).toBe(200);
    expect(contexts.map((c) => c?.identity?.sub)).toEqual(['u-old', 'u-new', 'u-old']);
  });

  it('answers 503 (not 401) when no JWKS could ever be loaded', async () => {
    const down = await startGateway({
      AUTH_URL: 'http://127.0.0.1:1',
      CHAT_URL: chat.url,
      JWKS_REFETCH_COOLDOWN_SECONDS: '1',
    });
    const res = await down.app.inject({
      method: 'GET',
      url: '/api/v1/chats',
      headers: bearer(await auth.sign()),
    });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toMatchObject({ code: 'auth_unavailable' });
  });
});
