import { Writable } from 'node:stream';
import pino from 'pino';
import type { FastifyBaseLogger } from 'fastify';
import { describe, expect, it } from 'vitest';
import { createKafka, createProducer } from './kafka';

describe('the Kafka producer', () => {
  it('is made without warnings in the service log (its partitioner is named; the retry limit is ours on purpose)', () => {
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
    const entries = lines.map((line) => JSON.parse(line) as { level: number; msg: string });
    expect(entries.filter((e) => /partitioner/i.test(e.msg))).toEqual([]);
    // kafkajs says this of every idempotent producer with a retry limit; EventProducer is what
    // makes the limit safe (a new producer after a failed send), so it is kept at debug level.
    expect(entries.filter((e) => /EoS/.test(e.msg)).map((e) => e.level)).toEqual([20]);
    expect(entries.filter((e) => e.level >= 40)).toEqual([]);
  });
});
