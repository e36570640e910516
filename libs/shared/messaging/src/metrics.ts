import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** The messaging metrics of one process, registered on the app's registry. */
export class MessagingMetrics {
  readonly outboxBacklog: Gauge<'schema'>;
  readonly outboxPublished: Counter<'schema' | 'topic'>;
  readonly publishDuration: Histogram<'schema'>;
  readonly consumed: Counter<'group' | 'topic' | 'outcome'>;
  readonly handleDuration: Histogram<'group' | 'topic'>;
  readonly retries: Counter<'group' | 'topic'>;
  readonly deadLetters: Counter<'group' | 'topic' | 'reason'>;
  readonly lag: Gauge<'group' | 'topic' | 'partition'>;
  readonly endToEnd: Histogram<'group' | 'topic'>;
  readonly housekeepingRuns: Counter<'schema' | 'task' | 'outcome'>;
  readonly producerRenewals: Counter;

  constructor(registry: Registry) {
    const registers = [registry];
    this.outboxBacklog = new Gauge({
      name: 'vivier_outbox_backlog_events',
      help: 'Outbox rows not yet published to Kafka.',
      labelNames: ['schema'],
      registers,
    });
    this.housekeepingRuns = new Counter({
      name: 'vivier_housekeeping_runs_total',
      help: "Runs of a schema's housekeeping tasks (purges) by the relay leader, by outcome.",
      labelNames: ['schema', 'task', 'outcome'],
      registers,
    });
    this.producerRenewals = new Counter({
      name: 'vivier_kafka_producer_renewals_total',
      help: 'Idempotent Kafka producers replaced by a new one after a failed send (EventProducer).',
      registers,
    });
    this.outboxPublished = new Counter({
      name: 'vivier_outbox_published_events_total',
      help: 'Outbox rows published to Kafka.',
      labelNames: ['schema', 'topic'],
      registers,
    });
    this.publishDuration = new Histogram({
      name: 'vivier_outbox_publish_duration_seconds',
      help: 'Time of one Kafka send of an outbox batch (acks=all).',
      labelNames: ['schema'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
      registers,
    });
    this.consumed = new Counter({
      name: 'vivier_consumer_events_total',
      help: 'Events taken from Kafka by outcome (handled, duplicate, ignored, retried, dead_lettered).',
      labelNames: ['group', 'topic', 'outcome'],
      registers,
    });
    this.handleDuration = new Histogram({
      name: 'vivier_consumer_handle_duration_seconds',
      help: 'Time to apply one event (handler + processed-event record, one transaction).',
      labelNames: ['group', 'topic'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30],
      registers,
    });
    this.retries = new Counter({
      name: 'vivier_consumer_retries_total',
      help: 'Events sent to a retry topic after a failed attempt.',
      labelNames: ['group', 'topic'],
      registers,
    });
    this.deadLetters = new Counter({
      name: 'vivier_consumer_dead_letters_total',
      help: 'Events parked on a dead-letter topic.',
      labelNames: ['group', 'topic', 'reason'],
      registers,
    });
    this.lag = new Gauge({
      name: 'vivier_consumer_lag_messages',
      help: 'Messages between the last consumed offset and the end of the partition.',
      labelNames: ['group', 'topic', 'partition'],
      registers,
    });
    this.endToEnd = new Histogram({
      name: 'vivier_consumer_event_age_seconds',
      help: 'Time from an event being created to it being handled.',
      labelNames: ['group', 'topic'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300],
      registers,
    });
  }
}
