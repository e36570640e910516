import { FormatRegistry } from '@sinclair/typebox';
import { describe, expect, it } from 'vitest';
import { isDateTime, isUuid, nameBasedUuid } from './formats.js';

describe('formats', () => {
  it('registers uuid and date-time with TypeBox', () => {
    expect(FormatRegistry.Has('uuid')).toBe(true);
    expect(FormatRegistry.Has('date-time')).toBe(true);
  });

  it('checks UUIDs', () => {
    expect(isUuid('5b0c1f8e-3a52-4d7b-9c1e-2f6a8d4b7e01')).toBe(true);
    expect(isUuid('5B0C1F8E-3A52-4D7B-9C1E-2F6A8D4B7E01')).toBe(true);
    expect(isUuid('5b0c1f8e3a524d7b9c1e2f6a8d4b7e01')).toBe(false);
    expect(isUuid('5b0c1f8e-3a52-4d7b-9c1e-2f6a8d4b7e0')).toBe(false);
    expect(isUuid('zb0c1f8e-3a52-4d7b-9c1e-2f6a8d4b7e01')).toBe(false);
    expect(isUuid(' 5b0c1f8e-3a52-4d7b-9c1e-2f6a8d4b7e01')).toBe(false);
  });

  it('checks RFC 3339 date-times with real calendar dates', () => {
    expect(isDateTime('2025-01-31T12:00:00.000Z')).toBe(true);
    expect(isDateTime('2024-02-29T00:00:00Z')).toBe(true);
    expect(isDateTime('2025-01-31T12:00:00+02:00')).toBe(true);
    expect(isDateTime('2025-02-29T00:00:00Z')).toBe(false);
    expect(isDateTime('1900-02-29T00:00:00Z')).toBe(false);
    expect(isDateTime('2025-13-01T00:00:00Z')).toBe(false);
    expect(isDateTime('2025-01-31T24:00:00Z')).toBe(false);
    expect(isDateTime('2016-12-31T23:59:60Z')).toBe(false);
    expect(isDateTime('2025-01-31T12:00:00')).toBe(false);
    expect(isDateTime('2025-01-31')).toBe(false);
    expect(isDateTime('2025-01-31T12:00:00+25:00')).toBe(false);
  });

  it('derives name-based UUIDs: stable, versioned, different for different names', () => {
    const chat = nameBasedUuid('sha1', 'vivier:openai-api:5b0c1f8e-3a52-4d7b-9c1e-2f6a8d4b7e01');
    expect(chat).toBe('24b1452a-6f87-521f-8f18-56430e0bd8fc');
    const marker = nameBasedUuid('sha256', 'forwarded chat.events/2/41\n', Buffer.from('{"a":1}'));
    expect(marker).toBe('7c6cafca-e208-8854-a9c1-1b388ec93d4e');
    expect(isUuid(chat) && isUuid(marker)).toBe(true);
    expect(nameBasedUuid('sha256', 'forwarded chat.events/2/42\n', Buffer.from('{"a":1}'))).not.toBe(marker);
  });
});
