import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testEnv } from '@vivier/service-kit/testing';

// Each service connects as its own role, which owns its schema and nothing else.
describe('chat database role', () => {
  let client: pg.Client;
  beforeAll(async () => {
    client = new pg.Client({ connectionString: testEnv('chat').DATABASE_URL });
    await client.connect();
  });
  afterAll(async () => {
    await client.end();
  });

  it('reads its own schema', async () => {
    const res = await client.query('select count(*)::int as n from chat.outbox');
    expect(res.rows[0].n).toBeGreaterThanOrEqual(0);
    expect((await client.query('select current_user')).rows[0].current_user).toBe('chat_svc');
  });

  it.each(['auth', 'admin', 'worker'])('gets a permission error reading %s.*', async (schema) => {
    await expect(client.query(`select * from ${schema}.outbox limit 1`)).rejects.toMatchObject({
      code: '42501',
      message: `permission denied for schema ${schema}`,
    });
  });

  it('cannot create schemas or tables outside its own schema', async () => {
    await expect(client.query('create schema sneaky')).rejects.toMatchObject({ code: '42501' });
    await expect(client.query('create table public.sneaky (id int)')).rejects.toMatchObject({ code: '42501' });
  });
});
