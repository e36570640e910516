import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORD, startAuth, uniqueEmail, type AuthHarness } from './helpers';

let auth: AuthHarness;
beforeAll(async () => {
  auth = await startAuth();
});
afterAll(async () => {
  await auth.close();
});

describe('registration of a taken email', () => {
  it('answers 409 email_taken (any letter case) and leaves the first account as it was', async () => {
    const email = uniqueEmail();
    const first = await auth.register(email);
    const again = await auth.call('POST', '/api/v1/auth/register', { body: { email: email.toUpperCase(), password: 'another strong passphrase 9' } });
    expect(again.statusCode).toBe(409);
    expect(again.json()).toMatchObject({ code: 'email_taken', status: 409 });
    const login = await auth.login(email, PASSWORD);
    expect(login.statusCode).toBe(200);
    expect(login.json<{ user: { id: string } }>().user.id).toBe(first.user.id);
  });
});
