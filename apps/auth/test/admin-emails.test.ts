import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { identityOf, startAuth, uniqueEmail, type AuthHarness } from './helpers';

let auth: AuthHarness;
const boss = uniqueEmail('boss');
beforeAll(async () => {
  auth = await startAuth({ ADMIN_EMAILS: ` ${boss.toUpperCase()} , ops@example.test` });
});
afterAll(async () => {
  await auth.close();
});

describe('ADMIN_EMAILS', () => {
  it('gives the admin role to a listed email at registration (case-insensitive), in the account and the token', async () => {
    const admin = await auth.register(boss);
    expect(admin.user.role).toBe('admin');
    expect(identityOf(admin.accessToken).role).toBe('admin');
    expect((await auth.call('GET', '/api/v1/auth/me', { identity: identityOf(admin.accessToken) })).json()).toMatchObject({ role: 'admin' });
  });

  it('gives everyone else the user role', async () => {
    const user = await auth.register(uniqueEmail());
    expect(user.user.role).toBe('user');
    expect(identityOf(user.accessToken).role).toBe('user');
  });
});
