import { housekeepingConfigProperties } from './housekeeping';
import net from 'node:net';
import tls from 'node:tls';
import { Kafka, logLevel as KafkaLogLevel, Partitioners, type ISocketFactory, type logCreator } from 'kafkajs';
import type { Static, TProperties } from '@sinclair/typebox';
import type { FastifyBaseLogger } from 'fastify';
import { Env } from '@vivier/service-kit';
import { EventProducer } from './producer';
import { fixKafkajsIdleLoop } from './request-queue-fix';

export const messagingConfigProperties = {
  KAFKA_PRODUCER_IDEMPOTENT: Env.bool(
    true,
    'Idempotent Kafka producer. A real Kafka supports it; the dev broker cannot (npm start sets false). Consumers dedupe by event id either way.',
  ),
  KAFKA_LOG_LEVEL: Env.enumOf(['nothing', 'error', 'warn', 'info', 'debug'] as const, 'warn', 'Log level of the Kafka client.'),
  CONSUMER_RETRY_ATTEMPTS: Env.int(5, 'Attempts of a failing event before it goes to the dead-letter topic.', 1),
  CONSUMER_RETRY_DELAY_MS: Env.int(1000, 'Delay before the first retry of a failing event; doubles each attempt.', 1),
  CONSUMER_RETRY_MAX_DELAY_MS: Env.int(60_000, 'Longest delay between two attempts of one event.', 1),
  CONSUMER_SESSION_TIMEOUT_MS: Env.int(30_000, 'Kafka consumer group session timeout.', 1000),
  CONSUMER_MAX_WAIT_MS: Env.int(
    1000,
    'Longest a fetch waits for data. A real Kafka answers as soon as data arrives; the dev broker holds every fetch this long, so npm start sets 50.',
    10,
  ),
  CONSUMER_PARTITIONS_CONCURRENTLY: Env.int(4, 'Partitions one consumer processes at the same time (order is kept per partition).', 1),
  CONSUMER_HANDLER_TIMEOUT_MS: Env.int(
    600_000,
    'Longest one event handler may run: then its abort signal fires, and a handler still running 5 s later is left behind and its event retried.',
    1000,
  ),
  OUTBOX_BATCH_SIZE: Env.int(500, 'Outbox rows published per Kafka request.', 1),
  OUTBOX_POLL_INTERVAL_MS: Env.int(1000, 'Safety poll of the outbox; NOTIFY wakes the relay at once.', 10),
  OUTBOX_LINGER_MS: Env.int(
    5,
    'Pause after a partial outbox batch while events stream in, so they go to Kafka in fewer, larger requests (like linger.ms); 0 turns it off.',
    0,
  ),
  ...housekeepingConfigProperties,
} satisfies TProperties;

export type MessagingConfig = {
  KAFKA_BROKERS: string;
  KAFKA_CLIENT_ID: string;
} & { [K in keyof typeof messagingConfigProperties]: Static<(typeof messagingConfigProperties)[K]> };

const LEVELS: Record<string, KafkaLogLevel> = {
  nothing: KafkaLogLevel.NOTHING,
  error: KafkaLogLevel.ERROR,
  warn: KafkaLogLevel.WARN,
  info: KafkaLogLevel.INFO,
  debug: KafkaLogLevel.DEBUG,
};

const LIMITED_RETRIES_WARNING = 'Limiting retries for the idempotent producer may invalidate EoS guarantees';

/** kafkajs logs through the service's pino logger. */
function pinoLogCreator(logger: FastifyBaseLogger): logCreator {
  return () =>
    ({ level, log }) => {
      const { message, ...extra } = log;
      const child = { kafka: extra };
      // Said of every idempotent producer made with a retry limit, as ours are: kafkajs gives up
      // after a few tries so that our loops keep control, and EventProducer then starts a new
      // producer (nothing is lost; consumers dedupe). Not a misconfiguration to warn of.
      if (message === LIMITED_RETRIES_WARNING) logger.debug(child, `kafka: ${message}`);
      else if (level === KafkaLogLevel.ERROR) logger.warn(child, `kafka: ${message}`);
      else if (level === KafkaLogLevel.WARN) logger.warn(child, `kafka: ${message}`);
      else if (level === KafkaLogLevel.INFO) logger.info(child, `kafka: ${message}`);
      else logger.debug(child, `kafka: ${message}`);
    };
}

/**
 * kafkajs's own socket factory without Nagle's algorithm. Its requests are small and several are
 * in flight at once (fetch, offset commits, heartbeats): with Nagle on, a request written while an
 * earlier one is unacknowledged waits for the peer's delayed ACK (40 ms on Linux).
 */
const socketFactory: ISocketFactory = ({ host, port, ssl, onConnect }) => {
  const socket = ssl
    ? tls.connect({ host, port, ...(net.isIP(host) ? {} : { servername: host }), ...ssl }, onConnect)
    : net.connect({ host, port }, onConnect);
  socket.setKeepAlive(true, 60_000);
  socket.setNoDelay(true);
  return socket;
};

export function createKafka(
  config: Pick<MessagingConfig, 'KAFKA_BROKERS' | 'KAFKA_CLIENT_ID' | 'KAFKA_LOG_LEVEL'>,
  service: string,
  logger: FastifyBaseLogger,
): Kafka {
  fixKafkajsIdleLoop();
  return new Kafka({
    clientId: `${config.KAFKA_CLIENT_ID}-${service}`,
    brokers: config.KAFKA_BROKERS.split(',').map((b) => b.trim()),
    socketFactory,
    connectionTimeout: 3000,
    requestTimeout: 10_000,
    logLevel: LEVELS[config.KAFKA_LOG_LEVEL] ?? KafkaLogLevel.WARN,
    logCreator: pinoLogCreator(logger),
    // Our own loops retry forever with backoff; kafkajs gives up quickly so they stay in control.
    retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2000 },
  });
}

/**
 * One producer per process for the relay and for retry/dead-letter records. An idempotent one is
 * replaced after a failed send (see EventProducer); `onRenewed` hears of each replacement.
 */
export function createProducer(kafka: Kafka, idempotent: boolean, onRenewed?: (error: unknown) => void): EventProducer {
  return new EventProducer(
    kafka,
    {
      idempotent,
      // One request in flight keeps the order of records of a partition even when a send is retried.
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      // kafkajs 2's default (murmur2, as the Java client places keys), named: left implicit, every
      // service logged a warning about the v1 → v2 change of default at each start.
      createPartitioner: Partitioners.DefaultPartitioner,
    },
    onRenewed,
  );
}

