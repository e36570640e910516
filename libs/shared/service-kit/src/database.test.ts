import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { createPool } from './database';
import { testAdminDatabaseUrl } from './testing';

const run = promisify(execFile);

/** The kernel's timer on the local TCP socket of a pool client (`ss -o`), e.g. `timer:(keepalive,9.9sec,0)`. */
async function socketTimer(client: pg.PoolClient): Promise<string> {
  const port = (client as unknown as { connection: { stream: { localPort: number } } }).connection.stream.localPort;
  const { stdout } = await run('ss', ['-tnoH', 'state', 'established', `( sport = :${port} )`]);
  return stdout;
}

describe('the PostgreSQL pool', () => {
  it('keeps TCP keepalive on its connections, so a connection whose server vanished (a failover, a partition) fails instead of waiting for good', async () => {
    const pool = createPool({ url: testAdminDatabaseUrl(), poolMax: 1, applicationName: 'vivier-keepalive-test' });
    const client = await pool.connect();
    try {
      await client.query('select 1');
      // statement_timeout is the server's: with the server gone, only the socket can tell.
      expect(await socketTimer(client)).toMatch(/timer:\(keepalive,/);
    } finally {
      client.release();
      await pool.end();
    }
  });
});
