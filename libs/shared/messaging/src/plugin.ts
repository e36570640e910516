import fp from 'fastify-plugin';
import type { Admin } from 'kafkajs';
import type { ConsumerGroup, Topic } from '@vivier/contracts';
import { closeStep, timedStep } from '@vivier/service-kit';
import { createKafka, createProducer, type MessagingConfig } from './kafka';
import { MessagingMetrics } from './metrics';
import { createPublisher, type Publish } from './publish';
import { OutboxRelay } from './relay';
import { messagingHousekeeping, type HousekeepingTask } from './housekeeping';
import { EventConsumer, type EventConsumerOptions, type EventHandlers } from './consumer';
import type { messagingTables } from './tables';

export interface ConsumerSpec {
  group: ConsumerGroup;
  topics: Topic[];
  handlers: EventHandlers;
  /** See EventConsumerOptions.applyInRuns: only for handlers whose effects are all in the transaction. */
  applyInRuns?: boolean;
}

export interface MessagingPluginOptions {
  service: string;
  /** The service's PostgreSQL schema (its outbox and processed_events live there). */
  schema: string;
  config: MessagingConfig;
  db: EventConsumerOptions['db'];
  tables: ReturnType<typeof messagingTables>;
  consumers?: ConsumerSpec[];
  /** The service's own upkeep, run with the messaging tables' purges by the relay leader. */
  housekeeping?: HousekeepingTask[];
}

declare module 'fastify' {
  interface FastifyInstance {
    messaging: {
      /** Write events to the outbox inside the caller's transaction. */
      publish: Publish;
      relay: OutboxRelay;
      consumers: EventConsumer[];
      metrics: MessagingMetrics;
    };
  }
}

/**
 * Kafka for a service: the outbox relay, the service's consumers, and a `kafka` readiness check
 * that marks the service degraded (not unready) while Kafka is away — the outbox keeps every
 * event until it returns, so HTTP traffic carries on.
 */
export const messagingPlugin = fp<MessagingPluginOptions>(
  async (app, options) => {
    const { config } = options;
    const kafka = createKafka(config, options.service, app.log);
    const metrics = new MessagingMetrics(app.metrics);
    const producer = createProducer(kafka, config.KAFKA_PRODUCER_IDEMPOTENT, (err) => {
      metrics.producerRenewals.inc();
      app.log.warn({ err }, 'a Kafka send failed: the next send goes through a new idempotent producer (a resend may duplicate records; consumers dedupe)');
    });
    const relay = new OutboxRelay({
      pool: app.pg,
      schema: options.schema,
      producer,
      logger: app.log,
      metrics,
      batchSize: config.OUTBOX_BATCH_SIZE,
      pollIntervalMs: config.OUTBOX_POLL_INTERVAL_MS,
      lingerMs: config.OUTBOX_LINGER_MS,
      housekeeping: {
        intervalMs: config.HOUSEKEEPING_INTERVAL_MS,
        tasks: [
          ...messagingHousekeeping(options.schema, { outboxHours: config.OUTBOX_RETENTION_HOURS, processedEventsHours: config.PROCESSED_EVENTS_RETENTION_HOURS }),
          ...(options.housekeeping ?? []),
        ],
      },
    });
    const consumers = (options.consumers ?? []).map(
      (spec) =>
        new EventConsumer({
          kafka,
          producer,
          group: spec.group,
          topics: spec.topics,
          handlers: spec.handlers,
          applyInRuns: spec.applyInRuns ?? false,
          db: options.db,
          processedEvents: options.tables.processedEvents,
          logger: app.log,
          metrics,
          retry: {
            attempts: config.CONSUMER_RETRY_ATTEMPTS,
            initialDelayMs: config.CONSUMER_RETRY_DELAY_MS,
            maxDelayMs: config.CONSUMER_RETRY_MAX_DELAY_MS,
          },
          sessionTimeoutMs: config.CONSUMER_SESSION_TIMEOUT_MS,
          maxWaitTimeMs: config.CONSUMER_MAX_WAIT_MS,
          partitionsConsumedConcurrently: config.CONSUMER_PARTITIONS_CONCURRENTLY,
          handlerTimeoutMs: config.CONSUMER_HANDLER_TIMEOUT_MS,
        }),
    );
    app.decorate('messaging', { publish: createPublisher(options.tables.outbox), relay, consumers, metrics });

    let admin: Admin | undefined;
    app.readiness.add({
      name: 'kafka',
      critical: false,
      check: async () => {
        admin ??= kafka.admin({ retry: { retries: 0 } });
        await admin.connect();
        await admin.describeCluster();
        if (relay.lastError) throw new Error(`outbox relay: ${relay.lastError} (backlog ${relay.backlog})`);
        const stuck = consumers.find((c) => !c.isHealthy && c.lastError);
        if (stuck) throw new Error(`consumer: ${stuck.lastError}`);
      },
    });

    app.addHook('onReady', async () => {
      relay.start();
      for (const consumer of consumers) consumer.start();
    });
    closeStep(app, 'messaging', async () => {
      // Consumers finish the record in hand and commit; the relay finishes its batch.
      await timedStep(app, 'kafka consumers', () => Promise.all(consumers.map((c) => c.stop())));
      await timedStep(app, 'outbox relay', () => relay.stop());
      await timedStep(app, 'kafka producer', () => producer.disconnect().catch(() => undefined));
      await admin?.disconnect().catch(() => undefined);
    });
  },
  { name: 'messaging', dependencies: ['database', 'readiness', 'metrics'] },
);
