import type { Kafka, Producer, ProducerBatch, ProducerConfig, ProducerRecord, RecordMetadata } from 'kafkajs';

interface Session {
  producer: Producer;
  connected: boolean;
  connecting?: Promise<void>;
  /** Sends under way on it. */
  sending: number;
  /** Replaced after a failed send: disconnected once its last send has ended. */
  retired: boolean;
}

/**
 * The process's Kafka producer, as the relay and the consumers' retry and dead-letter forwards
 * use it: connected on demand (kafkajs refuses sends while disconnected), and, when idempotent,
 * replaced after a send fails.
 *
 * Why replaced: an idempotent producer numbers its records per partition, and kafkajs takes the
 * numbers of a failed request back. When the request did reach the log (an answer that timed out,
 * a connection cut after the write), the next send reuses numbers the broker has already seen;
 * the broker takes it as a duplicate only if it is the very same batch, and refuses anything else
 * with OUT_OF_ORDER_SEQUENCE_NUMBER. So does a broker that has forgotten the producer (its state
 * expires after `producer.id.expiration.ms`, a day by default, of silence: a quiet service's relay)
 * with UNKNOWN_PRODUCER_ID or OUT_OF_ORDER_SEQUENCE_NUMBER. kafkajs never recovers from either by
 * itself: its numbers stay where they were, and every later send fails the same way, so the outbox
 * would stop for good. A new producer gets a new producer id from the broker and numbers from
 * zero. A resend through it can duplicate records the old one wrote; consumers dedupe by event id
 * (EVENTS.md), and nothing is lost.
 */
export class EventProducer {
  private session: Session | undefined;
  /** Producers made so far (a new one after each failed send, when idempotent). */
  private made = 0;
  /** Replaced producers still being disconnected (disconnect() waits for them). */
  private readonly retiring = new Set<Promise<void>>();

  constructor(
    private readonly kafka: Kafka,
    private readonly config: ProducerConfig,
    private readonly onRenewed?: (error: unknown) => void,
  ) {
    this.current();
  }

  /** How many kafkajs producers this has used: more than one after failures, when idempotent. */
  get generation(): number {
    return this.made;
  }

  async connect(): Promise<void> {
    await this.connected(this.current());
  }

  send(record: ProducerRecord): Promise<RecordMetadata[]> {
    return this.through((producer) => producer.send(record));
  }

  sendBatch(batch: ProducerBatch): Promise<RecordMetadata[]> {
    return this.through((producer) => producer.sendBatch(batch));
  }

  /** Disconnects the producer in use, and waits for replaced ones to be; a later send connects again. */
  async disconnect(): Promise<void> {
    const session = this.session;
    if (session) {
      await session.connecting?.catch(() => undefined);
      await session.producer.disconnect();
    }
    await Promise.all(this.retiring);
  }

  private current(): Session {
    if (this.session) return this.session;
    const producer = this.kafka.producer(this.config);
    const session: Session = { producer, connected: false, sending: 0, retired: false };
    // Connected once connect() has resolved, not at kafkajs's CONNECT event: an idempotent
    // producer emits that before it has its producer id, and a send in between would go out
    // without one. (kafkajs emits DISCONNECT only from disconnect().)
    producer.on(producer.events.DISCONNECT, () => (session.connected = false));
    this.made += 1;
    this.session = session;
    return session;
  }

  private async connected(session: Session): Promise<void> {
    if (session.connected) return;
    session.connecting ??= session.producer
      .connect()
      .then(() => {
        session.connected = true;
      })
      .finally(() => {
        session.connecting = undefined;
      });
    await session.connecting;
  }

  private async through(send: (producer: Producer) => Promise<RecordMetadata[]>): Promise<RecordMetadata[]> {
    const session = this.current();
    session.sending += 1;
    try {
      // A connection that fails (Kafka away) leaves nothing to renumber: the producer is kept, so
      // an outage does not make a new producer at every try.
      await this.connected(session);
      try {
        return await send(session.producer);
      } catch (error) {
        if (this.config.idempotent && !session.retired) {
          // The next send (a retry of this one, or any other) starts a new producer; sends still
          // under way on this one end first.
          session.retired = true;
          if (this.session === session) this.session = undefined;
          this.onRenewed?.(error);
        }
        throw error;
      }
    } finally {
      session.sending -= 1;
      if (session.retired && session.sending === 0) {
        const retiring: Promise<void> = session.producer
          .disconnect()
          .catch(() => undefined)
          .finally(() => this.retiring.delete(retiring));
        this.retiring.add(retiring);
      }
    }
  }
}
