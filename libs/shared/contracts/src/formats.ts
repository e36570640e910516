import { createHash } from 'node:crypto';
import { FormatRegistry } from '@sinclair/typebox';

// TypeBox checks a `format` only if it is registered; unregistered formats fail every value.
// The registry is global to the TypeBox module, so these also apply to other users of the
// schemas (a Fastify type provider, say). The definitions follow JSON Schema's meaning.

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const DATE_TIME =
  /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))$/;

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

export function isUuid(value: string): boolean {
  return UUID.test(value);
}

/**
 * A name-based UUID (RFC 9562): the first 16 bytes of the digest of `parts` with the version (5 for
 * SHA-1, 8 for SHA-256) and variant bits set. The same name always gives the same id.
 */
export function nameBasedUuid(algorithm: 'sha1' | 'sha256', ...parts: Array<string | Uint8Array>): string {
  const hash = createHash(algorithm);
  for (const part of parts) hash.update(part);
  const digest = hash.digest();
  digest[6] = (digest[6]! & 0x0f) | (algorithm === 'sha1' ? 0x50 : 0x80);
  digest[8] = (digest[8]! & 0x3f) | 0x80;
  const hex = digest.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * RFC 3339 date-time with a real calendar date. Leap seconds (`:60`) are refused because
 * JavaScript's Date cannot parse them and every consumer would.
 */
export function isDateTime(value: string): boolean {
  const match = DATE_TIME.exec(value);
  if (!match) return false;
  const [, y, mo, d, h, mi, s, oh, om] = match.map(Number) as number[];
  if (y === undefined || mo === undefined || d === undefined) return false;
  if (mo < 1 || mo > 12) return false;
  const leap = (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
  const days = mo === 2 && leap ? 29 : (DAYS_IN_MONTH[mo - 1] ?? 0);
  if (d < 1 || d > days) return false;
  if ((h ?? 0) > 23 || (mi ?? 0) > 59 || (s ?? 0) > 59) return false;
  if (oh !== undefined && !Number.isNaN(oh) && (oh > 23 || (om ?? 0) > 59)) return false;
  return true;
}

/** Registers the formats the contracts use. Safe to call more than once. */
export function registerFormats(): void {
  FormatRegistry.Set('uuid', isUuid);
  FormatRegistry.Set('date-time', isDateTime);
}

registerFormats();
