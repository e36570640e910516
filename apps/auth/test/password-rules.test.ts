import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAuth, uniqueEmail, type AuthHarness } from './helpers';

let auth: AuthHarness;
beforeAll(async () => {
  auth = await startAuth({ REGISTER_RATE_LIMIT_PER_IP: '1000' });
});
afterAll(async () => {
  await auth.close();
});

const register = (password: string, email = uniqueEmail()) => auth.call('POST', '/api/v1/auth/register', { body: { email, password } });

describe('password rules', () => {
  it('refuses fewer than 8 characters with validation_failed', async () => {
    const res = await register('x7!kQ2z');
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code: 'validation_failed', status: 400 });
  });

  it('refuses more than 128 characters with validation_failed', async () => {
    const res = await register('a'.repeat(129));
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code: 'validation_failed' });
  });

  it('refuses one of the most common passwords with weak_password, whatever its case', async () => {
    for (const common of ['password1', 'qwerty123', 'Iloveyou1', 'baseball']) {
      const res = await register(common);
      expect(res.statusCode, common).toBe(400);
      expect(res.json()).toMatchObject({ code: 'weak_password' });
    }
  });

  it('refuses the email address as the password', async () => {
    const email = uniqueEmail();
    const res = await register(email, email);
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code: 'weak_password' });
  });

  it('accepts a 64+ character passphrase (and 128 exactly) with spaces and any characters', async () => {
    const passphrase = 'the quick brown fox jumps over the lazy dog, then naps — très bien 🦊';
    expect([...passphrase].length).toBeGreaterThanOrEqual(64);
    const email = uniqueEmail();
    expect((await register(passphrase, email)).statusCode).toBe(201);
    expect((await auth.login(email, passphrase)).statusCode).toBe(200);
    expect((await register('Zq9'.repeat(42) + 'xy')).statusCode).toBe(201);
  });
});

describe('lengths of what a registration carries', () => {
  it('counts lengths as its events do (UTF-16 units): an email or name of emoji past the limit is a 400, not a 500', async () => {
    // 130 emoji: 130 code points (under 254) but 260 UTF-16 units (over it, as the event schema counts).
    const emoji = `${'🙂'.repeat(130)}@x.io`;
    const res = await auth.call('POST', '/api/v1/auth/register', { body: { email: emoji, password: 'a fine long passphrase 42' } });
    expect(res.json()).toMatchObject({ status: 400, code: 'validation_failed' });
    const named = await auth.call('POST', '/api/v1/auth/register', { body: { email: uniqueEmail(), password: 'a fine long passphrase 42', name: '🙂'.repeat(150) } });
    expect(named.json()).toMatchObject({ status: 400, code: 'validation_failed' });
    // Within the limit in UTF-16 units, emoji are welcome.
    const fine = await auth.call('POST', '/api/v1/auth/register', { body: { email: uniqueEmail(), password: 'a fine long passphrase 42', name: 'Ana 🙂' } });
    expect(fine.statusCode).toBe(201);
  });

  it('counts a password in characters, as the policy does: 100 emoji (200 UTF-16 units) register and sign in', async () => {
    const email = uniqueEmail();
    const passphrase = '🦊🙂'.repeat(50);
    expect((await register(passphrase, email)).statusCode).toBe(201);
    expect((await auth.login(email, passphrase)).statusCode).toBe(200);
    expect((await register('🦊'.repeat(129))).json()).toMatchObject({ status: 400, code: 'validation_failed' });
  });
});
