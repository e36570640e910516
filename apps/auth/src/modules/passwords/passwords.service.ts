import { hash, parseOptions, verify, type Algorithm } from '@node-rs/argon2';
import { dictionary } from '@zxcvbn-ts/language-common';
import { HttpProblem } from '@vivier/service-kit';

/** `Algorithm.Argon2id` (a const enum, which isolated modules cannot read). */
const ARGON2ID = 2 as Algorithm;

export const PASSWORD_MIN_LENGTH = 8;
export const PASSWORD_MAX_LENGTH = 128;

export interface Argon2Parameters {
  memoryCost: number;
  timeCost: number;
  parallelism: number;
}

/** The ~49k most common passwords of breach corpora (zxcvbn's list), lower-cased. */
const COMMON_PASSWORDS: ReadonlySet<string> = new Set(
  ((dictionary as Record<string, string[] | undefined>)['passwords-common'] ?? []).map((p) => p.toLowerCase()),
);

/**
 * Unicode-normalized (NFKC), so the same password typed on two keyboards hashes the same.
 * Not trimmed: spaces are part of a passphrase.
 */
export function normalizePassword(password: string): string {
  return password.normalize('NFKC');
}

/**
 * The password rules (OWASP ASVS 6.2): 8 to 128 characters (long passphrases welcome, no
 * composition rules), not one of the most common passwords, not the email address itself.
 * Throws 400 `validation_failed` (length) or `weak_password`.
 */
export function checkPasswordPolicy(password: string, email: string): void {
  const normalized = normalizePassword(password);
  const length = [...normalized].length;
  if (length < PASSWORD_MIN_LENGTH || length > PASSWORD_MAX_LENGTH) {
    throw new HttpProblem(400, 'validation_failed', `The password must have ${PASSWORD_MIN_LENGTH} to ${PASSWORD_MAX_LENGTH} characters.`, {
      extensions: { errors: [{ path: 'body/password', message: `must have ${PASSWORD_MIN_LENGTH} to ${PASSWORD_MAX_LENGTH} characters` }] },
    });
  }
  const lower = normalized.toLowerCase();
  if (COMMON_PASSWORDS.has(lower)) {
    throw new HttpProblem(400, 'weak_password', 'This password is one of the most common passwords; choose another.');
  }
  const local = email.split('@')[0] ?? '';
  if (lower === email.toLowerCase() || (local.length >= 4 && lower === local.toLowerCase())) {
    throw new HttpProblem(400, 'weak_password', 'The password must not be your email address.');
  }
}

/**
 * argon2id hashing (libargon2 on the libuv thread pool through @node-rs/argon2), at least
 * m=19456 KiB, t=2, p=1 (OWASP Password Storage Cheat Sheet).
 */
export class PasswordHasher {
  private readonly options;
  private dummy: Promise<string> | undefined;

  constructor(readonly parameters: Argon2Parameters) {
    this.options = { algorithm: ARGON2ID, ...parameters };
  }

  hash(password: string): Promise<string> {
    return hash(normalizePassword(password), this.options);
  }

  async verify(phc: string, password: string): Promise<boolean> {
    try {
      return await verify(phc, normalizePassword(password));
    } catch {
      return false;
    }
  }

  /**
   * Spends the same work as a real verification, for an unknown email or an account without a
   * password, so the answer's timing does not tell whether the account exists.
   */
  async verifyDummy(password: string): Promise<false> {
    this.dummy ??= this.hash('dummy password for unknown accounts');
    await this.verify(await this.dummy, password);
    return false;
  }

  /** True when a stored hash is weaker than the current parameters (rehashed at the next login). */
  needsRehash(phc: string): boolean {
    try {
      const current = parseOptions(phc);
      return (
        current.algorithm !== ARGON2ID ||
        current.memoryCost < this.parameters.memoryCost ||
        current.timeCost < this.parameters.timeCost ||
        current.parallelism < this.parameters.parallelism
      );
    } catch {
      return true;
    }
  }

  /** Computes the dummy hash ahead of the first unknown-email login. */
  async warmUp(): Promise<void> {
    this.dummy ??= this.hash('dummy password for unknown accounts');
    await this.dummy;
  }
}
