import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** Opaque bearer secrets: a type prefix and 256 random bits, stored only as their SHA-256. */
export const REFRESH_TOKEN_PREFIX = 'vrt_';
export const API_KEY_PREFIX = 'vk_';

/** 32 random bytes in base64url: 43 characters. */
const BODY = '[A-Za-z0-9_-]{43}';
export const REFRESH_TOKEN_PATTERN = new RegExp(`^${REFRESH_TOKEN_PREFIX}${BODY}$`);
export const API_KEY_PATTERN = new RegExp(`^${API_KEY_PREFIX}${BODY}$`);

export function newOpaqueToken(prefix: string): string {
  return prefix + randomBytes(32).toString('base64url');
}

export function sha256Hex(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex');
}

/**
 * The successor of a refresh token: HMAC-SHA256 of the token under a server key. Deterministic, so
 * a rotated token presented again inside the grace window gets the same successor without the
 * successor ever being stored; unpredictable to anyone without the server key.
 */
export function successorToken(key: Buffer, token: string): string {
  return REFRESH_TOKEN_PREFIX + createHmac('sha256', key).update(token, 'utf8').digest('base64url');
}

export function constantTimeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
