import { createEvent, EVENTS } from '@vivier/contracts';
import type { Publish } from '@vivier/messaging';
import { HttpProblem, problems, type Identity } from '@vivier/service-kit';
import type { FastifyBaseLogger } from 'fastify';
import type { AuthDatabase } from '../../database';
import { decodeCursor, pageOf } from '../../http.schema';
import { API_KEY_PATTERN, API_KEY_PREFIX, newOpaqueToken, sha256Hex } from '../../security/opaque-token';
import { actorOf, recordFailure, type RequestOrigin } from '../audit/audit.service';
import type { RevocationNotifier } from '../revocation/revocation.service';
import { apiKeysRepository, type ApiKeyRow, type ApiKeysRepository } from './api-keys.repository';

/** Characters of a key shown in lists (`vk_` and 8 more), enough to tell keys apart. */
const SHOWN_PREFIX_LENGTH = API_KEY_PREFIX.length + 8;
const LAST_USED_RESOLUTION_MS = 60_000;

export interface ApiKeyView {
  id: string;
  name: string;
  prefix: string;
  createdAt: string;
  lastUsedAt: string | null;
}

const invalidApiKey = () => new HttpProblem(401, 'invalid_api_key', 'The API key is invalid or revoked.');

/**
 * API keys (`vk_` + 256 random bits): shown once at creation, stored as SHA-256, owned by one
 * user, revocable. The gateway checks them through the internal verify route.
 */
export class ApiKeysService {
  private readonly keys: ApiKeysRepository;

  constructor(
    private readonly options: { db: AuthDatabase; publish: Publish; revocations: RevocationNotifier; log: FastifyBaseLogger },
  ) {
    this.keys = apiKeysRepository(options.db);
  }

  async create(identity: Identity, name: string, origin: RequestOrigin): Promise<ApiKeyView & { key: string }> {
    const key = newOpaqueToken(API_KEY_PREFIX);
    const row = await this.options.db.transaction(async (tx) => {
      const inserted = await this.keys.insert({ userId: identity.sub, name, prefix: key.slice(0, SHOWN_PREFIX_LENGTH), keyHash: sha256Hex(key) }, tx);
      await this.options.publish(tx, createEvent(EVENTS.authApiKeyCreated, { actor: actorOf(origin, identity.sub), userId: identity.sub, apiKeyId: inserted.id, name }));
      return inserted;
    });
    return { ...view(row), key };
  }

  async list(identity: Identity, query: { limit?: number; cursor?: string }): Promise<{ items: ApiKeyView[]; nextCursor: string | null }> {
    const limit = query.limit ?? 50;
    const rows = await this.keys.listActive(identity.sub, limit + 1, decodeCursor(query.cursor));
    return pageOf(rows, limit, view);
  }

  /** Revokes one of the caller's keys; another user's (or an unknown) key is 404. */
  async revoke(identity: Identity, id: string, origin: RequestOrigin): Promise<void> {
    const row = await this.keys.byIdForUser(id, identity.sub);
    if (!row) throw problems.notFound('No such API key.');
    const revoked = await this.options.db.transaction(async (tx) => {
      if (!(await this.keys.revoke(id, new Date(), tx))) return false;
      await this.options.publish(tx, createEvent(EVENTS.authApiKeyRevoked, { actor: actorOf(origin, identity.sub), userId: identity.sub, apiKeyId: id }));
      return true;
    });
    if (revoked) await this.options.revocations.apiKeyRevoked(identity.sub, id);
  }

  /**
   * For the gateway: who a key belongs to. Unknown, revoked, or its owner disabled → 401, and an
   * `operation.failed` audit event with the client the gateway names (`origin`).
   */
  async verify(key: string, origin?: RequestOrigin): Promise<{ userId: string; keyId: string; role: 'user' | 'admin' }> {
    if (!API_KEY_PATTERN.test(key)) {
      await recordFailure(this.options, { operation: 'api_key', reason: 'invalid_token' }, origin);
      throw invalidApiKey();
    }
    const found = await this.keys.activeByHash(sha256Hex(key));
    if (!found || found.disabledAt) {
      const reason = found ? 'account_disabled' : 'invalid_token';
      await recordFailure(this.options, { operation: 'api_key', reason, ...(found ? { userId: found.userId } : {}) }, origin);
      throw invalidApiKey();
    }
    const now = Date.now();
    if (!found.lastUsedAt || now - found.lastUsedAt.getTime() > LAST_USED_RESOLUTION_MS) {
      // Off the answer's path: a lost update only makes lastUsedAt a minute older.
      void this.keys
        .touch(found.id, new Date(now), new Date(now - LAST_USED_RESOLUTION_MS))
        .catch((error: unknown) => this.options.log.warn({ err: error, keyId: found.id }, 'could not record API key use'));
    }
    return { userId: found.userId, keyId: found.id, role: found.role };
  }
}

function view(row: ApiKeyRow): ApiKeyView {
  return { id: row.id, name: row.name, prefix: row.prefix, createdAt: row.createdAt.toISOString(), lastUsedAt: row.lastUsedAt?.toISOString() ?? null };
}
