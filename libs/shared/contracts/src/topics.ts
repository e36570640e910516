/**
 * Kafka topics, the services that produce them and the consumer groups that read them.
 *
 * WARNING: a topic name, a consumer group id and an event type are contracts between deployed
 * services. Renaming one needs a migration plan: dual-publish to the old and the new topic, let
 * consumers drain the old one, switch every consumer, then retire the old topic. Never rename in place.
 */

export const TOPICS = {
  authEvents: 'auth.events',
  adminEvents: 'admin.events',
  chatEvents: 'chat.events',
  jobsCompletion: 'jobs.completion',
  jobsExport: 'jobs.export',
  workerEvents: 'worker.events',
} as const;

export type TopicName = keyof typeof TOPICS;
export type Topic = (typeof TOPICS)[TopicName];

/** Consumer group ids. One group per consuming service; renaming one resets its offsets. */
export const CONSUMER_GROUPS = {
  auth: 'auth',
  chat: 'chat',
  admin: 'admin',
  worker: 'worker',
} as const;

export type ConsumerGroup = (typeof CONSUMER_GROUPS)[keyof typeof CONSUMER_GROUPS];

/** The services that publish events, and the CloudEvents `source` of each. */
export const EVENT_SOURCES = {
  auth: 'vivier/auth',
  admin: 'vivier/admin',
  chat: 'vivier/chat',
  worker: 'vivier/worker',
} as const;

export type ProducerService = keyof typeof EVENT_SOURCES;
export type EventSource = (typeof EVENT_SOURCES)[ProducerService];

/** Exactly one service writes to each topic. */
export const TOPIC_PRODUCERS = {
  'auth.events': 'auth',
  'admin.events': 'admin',
  'chat.events': 'chat',
  'jobs.completion': 'chat',
  'jobs.export': 'chat',
  'worker.events': 'worker',
} as const satisfies Record<Topic, ProducerService>;

/** Which topics each consumer group reads. */
export const SUBSCRIPTIONS = {
  // Enforce role changes and disabling (revoke sessions).
  auth: [TOPICS.adminEvents],
  // Quotas and providers set by admins, results of background jobs. (Disabled users and revoked
  // sessions reach chat as requests the gateway refuses, not as events.)
  chat: [TOPICS.adminEvents, TOPICS.workerEvents],
  // Read models (users, usage analytics) and the audit log, including admins' own actions.
  admin: [TOPICS.authEvents, TOPICS.chatEvents, TOPICS.workerEvents, TOPICS.adminEvents],
  // Background jobs, titles / summaries of chats, and providers set by admins (for the jobs' calls).
  worker: [TOPICS.jobsCompletion, TOPICS.jobsExport, TOPICS.chatEvents, TOPICS.adminEvents],
} as const satisfies Record<ConsumerGroup, readonly Topic[]>;

export const DEFAULT_PARTITIONS = 4;

export type RetryTopic = `${Topic}.retry.${ConsumerGroup}`;
export type DeadLetterTopic = `${Topic}.dlq.${ConsumerGroup}`;

/** Where a consumer group delays an event it failed to handle (attempt count in a header). */
export function retryTopic<T extends Topic, G extends ConsumerGroup>(topic: T, group: G): `${T}.retry.${G}` {
  return `${topic}.retry.${group}`;
}

/** Where a consumer group parks an event after its last retry, with the error. */
export function deadLetterTopic<T extends Topic, G extends ConsumerGroup>(
  topic: T,
  group: G,
): `${T}.dlq.${G}` {
  return `${topic}.dlq.${group}`;
}

/** The consumer groups that read a topic, in the order of CONSUMER_GROUPS. */
export function consumersOf(topic: Topic): ConsumerGroup[] {
  return Object.values(CONSUMER_GROUPS).filter((group) =>
    (SUBSCRIPTIONS[group] as readonly Topic[]).includes(topic),
  );
}

export interface TopicSpec {
  name: Topic | RetryTopic | DeadLetterTopic;
  kind: 'main' | 'retry' | 'dead-letter';
  /** The main topic this one belongs to (itself for a main topic). */
  topic: Topic;
  /** The consumer group that owns a retry or dead-letter topic. */
  group?: ConsumerGroup;
  partitions: number;
}

/**
 * Every topic the platform uses: each main topic, then a retry and a dead-letter topic per
 * consumer group that reads it. The dev broker creates these at start.
 */
export function allTopics(options: { partitions?: number } = {}): TopicSpec[] {
  const partitions = options.partitions ?? DEFAULT_PARTITIONS;
  if (!Number.isInteger(partitions) || partitions < 1) {
    throw new RangeError(`partitions must be a positive integer, got ${partitions}`);
  }
  const specs: TopicSpec[] = [];
  for (const topic of Object.values(TOPICS)) {
    specs.push({ name: topic, kind: 'main', topic, partitions });
    for (const group of consumersOf(topic)) {
      specs.push({ name: retryTopic(topic, group), kind: 'retry', topic, group, partitions });
      specs.push({ name: deadLetterTopic(topic, group), kind: 'dead-letter', topic, group, partitions });
    }
  }
  return specs;
}
