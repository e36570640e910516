import { describe, expect, it } from 'vitest';
import {
  CONSUMER_GROUPS,
  DEFAULT_PARTITIONS,
  SUBSCRIPTIONS,
  TOPICS,
  TOPIC_PRODUCERS,
  allTopics,
  consumersOf,
  deadLetterTopic,
  retryTopic,
} from './topics.js';

describe('topics', () => {
  it('names the six topics of EVENTS.md', () => {
    expect(Object.values(TOPICS)).toEqual([
      'auth.events',
      'admin.events',
      'chat.events',
      'jobs.completion',
      'jobs.export',
      'worker.events',
    ]);
    expect(Object.values(CONSUMER_GROUPS)).toEqual(['auth', 'chat', 'admin', 'worker']);
  });

  it('has one producer per topic', () => {
    expect(TOPIC_PRODUCERS).toEqual({
      'auth.events': 'auth',
      'admin.events': 'admin',
      'chat.events': 'chat',
      'jobs.completion': 'chat',
      'jobs.export': 'chat',
      'worker.events': 'worker',
    });
  });

  it('subscribes each consumer group to the topics of EVENTS.md (and the worker to admin.events, for providers)', () => {
    expect(SUBSCRIPTIONS).toEqual({
      auth: ['admin.events'],
      chat: ['admin.events', 'worker.events'],
      admin: ['auth.events', 'chat.events', 'worker.events', 'admin.events'],
      worker: ['jobs.completion', 'jobs.export', 'chat.events', 'admin.events'],
    });
    expect(consumersOf('auth.events')).toEqual(['admin']);
    expect(consumersOf('admin.events')).toEqual(['auth', 'chat', 'admin', 'worker']);
    expect(consumersOf('chat.events')).toEqual(['admin', 'worker']);
    expect(consumersOf('jobs.completion')).toEqual(['worker']);
  });

  it('names retry and dead-letter topics per consumer group', () => {
    expect(retryTopic(TOPICS.jobsCompletion, CONSUMER_GROUPS.worker)).toBe('jobs.completion.retry.worker');
    expect(deadLetterTopic(TOPICS.jobsCompletion, CONSUMER_GROUPS.worker)).toBe('jobs.completion.dlq.worker');
    expect(retryTopic('chat.events', 'admin')).toBe('chat.events.retry.admin');
    expect(deadLetterTopic('auth.events', 'chat')).toBe('auth.events.dlq.chat');
  });

  it('lists every main, retry and dead-letter topic with partitions', () => {
    const topics = allTopics();
    // 6 main topics + a retry and a dlq topic for each of the 11 subscriptions.
    expect(topics).toHaveLength(6 + 2 * 11);
    expect(new Set(topics.map((t) => t.name)).size).toBe(topics.length);
    expect(topics.every((t) => t.partitions === DEFAULT_PARTITIONS)).toBe(true);
    expect(DEFAULT_PARTITIONS).toBe(4);
    expect(topics.filter((t) => t.kind === 'main').map((t) => t.name)).toEqual(Object.values(TOPICS));
    expect(topics).toContainEqual({
      name: 'admin.events.retry.auth',
      kind: 'retry',
      topic: 'admin.events',
      group: 'auth',
      partitions: 4,
    });
    expect(topics).toContainEqual({
      name: 'worker.events.dlq.admin',
      kind: 'dead-letter',
      topic: 'worker.events',
      group: 'admin',
      partitions: 4,
    });
    // No retry topic for a group that does not read the topic.
    expect(topics.map((t) => t.name)).not.toContain('jobs.export.retry.chat');
  });

  it('takes another partition count', () => {
    expect(allTopics({ partitions: 12 }).every((t) => t.partitions === 12)).toBe(true);
    expect(() => allTopics({ partitions: 0 })).toThrow(RangeError);
    expect(() => allTopics({ partitions: 1.5 })).toThrow(/positive integer/);
  });
});
