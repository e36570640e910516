import pg from 'pg';
import { DrizzleQueryError } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { isTransientDatabaseError } from './consumer';

/** An error response of PostgreSQL, as node-postgres builds it. */
function postgresError(code: string): pg.DatabaseError {
  const error = new pg.DatabaseError('from the server', 0, 'error');
  error.code = code;
  error.severity = 'FATAL';
  return error;
}

describe('which handler failures are the database being away', () => {
  it('counts lost connections, shutdowns, too many connections, serialization failures and deadlocks, as thrown or wrapped by drizzle', () => {
    for (const code of ['08006', '57P01', '57P03', '53300', '40001', '40P01']) {
      expect(isTransientDatabaseError(postgresError(code)), code).toBe(true);
      expect(isTransientDatabaseError(new DrizzleQueryError('select 1', [], postgresError(code))), code).toBe(true);
    }
    expect(isTransientDatabaseError(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isTransientDatabaseError(new Error('timeout exceeded when trying to connect'))).toBe(true);
  });

  it('does not count what fails every time, nor any other call’s network errors', () => {
    // A protocol violation (too many bind parameters, say) and a constraint violation repeat on every try.
    expect(isTransientDatabaseError(postgresError('08P01'))).toBe(false);
    expect(isTransientDatabaseError(postgresError('23505'))).toBe(false);
    // A provider, S3 or another service unreachable: their socket errors say nothing about the database.
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });
    expect(isTransientDatabaseError(refused)).toBe(false);
    expect(isTransientDatabaseError(new TypeError('fetch failed', { cause: refused }))).toBe(false);
    expect(isTransientDatabaseError(new Error('provider down', { cause: new Error('Connection terminated unexpectedly') }))).toBe(false);
  });
});
