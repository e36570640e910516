import { describe, expect, it } from 'vitest';
import { EVENTS, TOPICS } from '@vivier/contracts';
import { AUDITED_EVENT_TYPES } from './audit.consumer';

describe('the audit log', () => {
  it('keeps every event auth and admin publish (a new auth event type is audited from its first release)', () => {
    const published = Object.values(EVENTS)
      .filter((e) => e.topic === TOPICS.authEvents || e.topic === TOPICS.adminEvents)
      .map((e) => e.type);
    expect(published.filter((type) => !AUDITED_EVENT_TYPES.includes(type))).toEqual([]);
  });
});
