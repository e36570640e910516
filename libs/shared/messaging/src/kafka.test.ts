import { Writable } from 'node:stream';
import pino from 'pino';
import type { FastifyBaseLogger } from 'fastify';
import { describe, expect, it } from 'vitest';
import { createKafka, createProducer } from './kafka';

describe('the Kafka producer', () => {
  it('is made without the partitioner warning in the service log (its partitioner is named)', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const logger = pino({ level: 'debug' }, sink) as unknown as FastifyBaseLogger;
    const kafka = createKafka({ KAFKA_BROKERS: '127.0.0.1:1', KAFKA_CLIENT_ID: 'vivier', KAFKA_LOG_LEVEL: 'warn' }, 'test', logger);
    createProducer(kafka, false);
    createProducer(kafka, true);
    // (The idempotent producer also warns that limiting its retries may weaken exactly-once
    // delivery: a real question about createKafka's retries, left open.)
    expect(lines.filter((line) => /partitioner/i.test(line))).toEqual([]);
  });
});
