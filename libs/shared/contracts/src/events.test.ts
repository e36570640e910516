import { describe, expect, it } from 'vitest';
import { EVENTS } from './registry.js';
import type { AnyEventDefinition } from './event-definition.js';
import { validate } from './validation.js';

// Payload schemas: what producers may send and consumers can rely on.

function issuesOf(definition: AnyEventDefinition, data: unknown) {
  return validate(definition.schema, data, '/data');
}

function withChanges(base: object, changes: Record<string, unknown>): Record<string, unknown> {
  return { ...base, ...changes };
}

function without(base: object, key: string): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...base };
  delete copy[key];
  return copy;
}

describe('chat.message.completed payload', () => {
  const definition = EVENTS.chatMessageCompleted;
  const valid = definition.example;

  it('accepts a completed, a cancelled and a failed reply', () => {
    expect(issuesOf(definition, valid)).toEqual([]);
    expect(
      issuesOf(
        definition,
        withChanges(valid, { status: 'cancelled', usage: { promptTokens: 1, completionTokens: 0 } }),
      ),
    ).toEqual([]);
    expect(
      issuesOf(
        definition,
        withChanges(without(valid, 'timeToFirstTokenMs'), {
          status: 'failed',
          error: { code: 'provider_unavailable', detail: 'all providers failed' },
        }),
      ),
    ).toEqual([]);
  });

  it('names a missing field', () => {
    expect(issuesOf(definition, without(valid, 'userMessageId'))).toEqual([
      { path: '/data/userMessageId', message: 'Expected required property' },
    ]);
  });

  it('refuses an extra field', () => {
    expect(issuesOf(definition, withChanges(valid, { content: 'the reply' }))).toEqual([
      { path: '/data/content', message: 'Unexpected property' },
    ]);
    expect(issuesOf(definition, withChanges(valid, { usage: { ...valid.usage, totalTokens: 3 } }))).toEqual([
      { path: '/data/usage/totalTokens', message: 'Unexpected property' },
    ]);
  });

  it('refuses a bad uuid', () => {
    expect(issuesOf(definition, withChanges(valid, { chatId: 'chat-1' }))).toEqual([
      { path: '/data/chatId', message: "Expected string to match 'uuid' format" },
    ]);
  });

  it('refuses a value outside an enum and lists the allowed ones', () => {
    expect(issuesOf(definition, withChanges(valid, { status: 'done' }))).toEqual([
      { path: '/data/status', message: 'Expected one of "completed", "cancelled", "failed"' },
    ]);
  });

  it('refuses negative or fractional token counts and a non-UTC time', () => {
    expect(
      issuesOf(definition, withChanges(valid, { usage: { promptTokens: -1, completionTokens: 1.5 } })),
    ).toEqual([
      { path: '/data/usage/promptTokens', message: 'Expected integer to be greater or equal to 0' },
      { path: '/data/usage/completionTokens', message: 'Expected integer' },
    ]);
    expect(
      issuesOf(definition, withChanges(valid, { completedAt: '2025-01-31T14:00:00+02:00' })),
    ).toHaveLength(1);
    expect(issuesOf(definition, withChanges(valid, { completedAt: '2025-02-30T12:00:00Z' }))).toEqual([
      { path: '/data/completedAt', message: "Expected string to match 'date-time' format" },
    ]);
  });

  it('refuses an error code that is not a stable code', () => {
    const issues = issuesOf(definition, withChanges(valid, { error: { code: 'Provider Down', detail: '' } }));
    expect(issues.map((i) => i.path)).toEqual(['/data/error/code']);
  });
});

describe('auth payloads', () => {
  it('login.failed carries the attempted email and a reason, never a password', () => {
    const definition = EVENTS.authLoginFailed;
    expect(issuesOf(definition, definition.example)).toEqual([]);
    expect(issuesOf(definition, withChanges(definition.example, { password: 'hunter2' }))).toEqual([
      { path: '/data/password', message: 'Unexpected property' },
    ]);
    expect(issuesOf(definition, withChanges(definition.example, { reason: 'wrong_password' }))[0]?.path).toBe(
      '/data/reason',
    );
    expect(issuesOf(definition, withChanges(definition.example, { email: 'not an email' }))[0]?.path).toBe(
      '/data/email',
    );
  });

  it('session.revoked takes each documented reason and no token', () => {
    const definition = EVENTS.authSessionRevoked;
    for (const reason of [
      'logout',
      'logout_all',
      'reuse_detected',
      'admin_disabled',
      'password_changed',
      'revoked_by_user',
    ]) {
      expect(issuesOf(definition, withChanges(definition.example, { reason })), reason).toEqual([]);
    }
    expect(issuesOf(definition, withChanges(definition.example, { reason: 'expired' }))[0]?.path).toBe(
      '/data/reason',
    );
    expect(issuesOf(definition, withChanges(definition.example, { refreshToken: 'rt_abc' }))).toEqual([
      { path: '/data/refreshToken', message: 'Unexpected property' },
    ]);
    expect(issuesOf(definition, withChanges(definition.example, { sessionIds: ['x'] }))[0]?.path).toBe(
      '/data/sessionIds/0',
    );
  });

  it('actor has only user id, ip and user agent', () => {
    const definition = EVENTS.authUserLoggedIn;
    const actor = { ...definition.example.actor, accessToken: 'eyJ...' };
    expect(issuesOf(definition, withChanges(definition.example, { actor }))).toEqual([
      { path: '/data/actor/accessToken', message: 'Unexpected property' },
    ]);
    expect(issuesOf(definition, withChanges(definition.example, { actor: {} }))).toEqual([]);
  });

  it('user.updated needs at least one change', () => {
    const definition = EVENTS.authUserUpdated;
    expect(issuesOf(definition, withChanges(definition.example, { changes: {} }))).toEqual([
      { path: '/data/changes', message: 'Expected object to have at least 1 properties' },
    ]);
    expect(
      issuesOf(
        definition,
        withChanges(definition.example, { changes: { passwordChanged: true, password: 'x' } }),
      ),
    ).toEqual([{ path: '/data/changes/password', message: 'Unexpected property' }]);
  });
});

describe('admin payloads', () => {
  it('quota.set takes a non-negative integer or null (unlimited)', () => {
    const definition = EVENTS.adminQuotaSet;
    expect(issuesOf(definition, withChanges(definition.example, { monthlyTokens: 0 }))).toEqual([]);
    expect(issuesOf(definition, withChanges(definition.example, { monthlyTokens: null }))).toEqual([]);
    expect(issuesOf(definition, withChanges(definition.example, { monthlyTokens: -5 }))).toEqual([
      { path: '/data/monthlyTokens', message: 'Expected integer to be greater or equal to 0' },
    ]);
    expect(issuesOf(definition, withChanges(definition.example, { monthlyTokens: '1000' }))).toEqual([
      { path: '/data/monthlyTokens', message: 'Expected one of integer, null' },
    ]);
    expect(issuesOf(definition, without(definition.example, 'monthlyTokens'))[0]?.path).toBe(
      '/data/monthlyTokens',
    );
  });

  it('needs the administrator behind an admin action', () => {
    const definition = EVENTS.adminUserDisabled;
    expect(issuesOf(definition, withChanges(definition.example, { actor: { ip: '198.51.100.20' } }))).toEqual(
      [{ path: '/data/actor/userId', message: 'Expected required property' }],
    );
  });

  it('provider.configured carries the API key only encrypted', () => {
    const definition = EVENTS.adminProviderConfigured;
    const valid = definition.example;
    expect(issuesOf(definition, withChanges(valid, { apiKeyEnvelope: null }))).toEqual([]);
    expect(issuesOf(definition, withChanges(valid, { apiKey: 'sk-live-123' }))).toEqual([
      { path: '/data/apiKey', message: 'Unexpected property' },
    ]);
    const envelope = valid.apiKeyEnvelope!;
    expect(
      issuesOf(definition, withChanges(valid, { apiKeyEnvelope: { ...envelope, key: 'sk-live-123' } })),
    ).toEqual([{ path: '/data/apiKeyEnvelope/key', message: 'Unexpected property' }]);
    // A clear key pasted into the ciphertext field is not base64.
    expect(
      issuesOf(
        definition,
        withChanges(valid, { apiKeyEnvelope: { ...envelope, ciphertext: 'sk-live-1234567890' } }),
      ),
    ).toEqual([
      {
        path: '/data/apiKeyEnvelope/ciphertext',
        message: expect.stringMatching(/^Expected string to match/),
      },
    ]);
    expect(
      issuesOf(definition, withChanges(valid, { apiKeyEnvelope: { ...envelope, algorithm: 'aes-128-cbc' } })),
    ).toEqual([{ path: '/data/apiKeyEnvelope/algorithm', message: 'Expected "aes-256-gcm"' }]);
    expect(issuesOf(definition, withChanges(valid, { baseUrl: 'file:///etc/passwd' }))[0]?.path).toBe(
      '/data/baseUrl',
    );
  });
});

describe('chat, jobs and worker payloads', () => {
  it('chat.created may have no title yet', () => {
    const definition = EVENTS.chatCreated;
    expect(issuesOf(definition, withChanges(definition.example, { title: 'Lisbon' }))).toEqual([]);
    expect(issuesOf(definition, withChanges(definition.example, { title: '' }))).toEqual([
      { path: '/data/title', message: 'Expected string length greater or equal to 1' },
    ]);
  });

  it('completion.requested needs a non-empty context of user and assistant turns', () => {
    const definition = EVENTS.jobsCompletionRequested;
    expect(issuesOf(definition, withChanges(definition.example, { messages: [] }))[0]?.path).toBe(
      '/data/messages',
    );
    expect(
      issuesOf(definition, withChanges(definition.example, { messages: [{ role: 'tool', content: 'x' }] }))[0]
        ?.path,
    ).toBe('/data/messages/0/role');
  });

  it('export.ready has an object key and an expiry, not a URL', () => {
    const definition = EVENTS.workerExportReady;
    expect(issuesOf(definition, without(definition.example, 'expiresAt'))).toEqual([
      { path: '/data/expiresAt', message: 'Expected required property' },
    ]);
    expect(
      issuesOf(definition, withChanges(definition.example, { url: 'https://s3/...?X-Amz-Signature=abc' })),
    ).toEqual([{ path: '/data/url', message: 'Unexpected property' }]);
  });

  it('completion.finished reports a failure with its partial content', () => {
    const definition = EVENTS.workerCompletionFinished;
    expect(issuesOf(definition, definition.example)).toEqual([]);
    expect(issuesOf(definition, withChanges(definition.example, { status: 'queued' }))[0]?.path).toBe(
      '/data/status',
    );
  });
});
