import pino from 'pino';
import type { FastifyBaseLogger } from 'fastify';
import { createDatabase, createPool, startProcess } from '@vivier/service-kit';
import { authTables } from '@vivier/db-auth';
import { loadAuthConfig } from './config';
import { SecretBox } from './security/secret-box';
import { SigningKeyRing } from './modules/tokens/tokens.service';

// `npm run rotate-keys -w @vivier/auth`: a new access-token signing key now (running instances
// pick it up within 30 s). Tokens of the previous key keep verifying until they expire.
startProcess(async () => {
  const config = loadAuthConfig();
  const pool = createPool({ url: config.DATABASE_URL, poolMax: 1, applicationName: 'auth-rotate-keys' });
  try {
    const log = pino({ level: config.LOG_LEVEL }) as unknown as FastifyBaseLogger;
    const ring = new SigningKeyRing(createDatabase(pool, authTables), new SecretBox(config.AUTH_KEY_ENCRYPTION_KEY), {
      accessTokenTtlSeconds: config.ACCESS_TOKEN_TTL_SECONDS,
      rotationDays: config.JWT_KEY_ROTATION_DAYS, publishAheadSeconds: config.JWT_KEY_PUBLISH_AHEAD_SECONDS,
      log,
    });
    const { kid } = await ring.rotate();
    process.stdout.write(`auth: new signing key ${kid}; the previous one stays in the JWKS until its tokens expire\n`);
  } finally {
    await pool.end();
  }
});
