import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Kafka, Producer } from 'kafkajs';
import type { DevKafka } from '@vivier/dev-kafka';
import { kafkajsRequestQueue, scheduleCheckWhenPending } from '../src/request-queue-fix';
import { sleep, startBroker } from './helpers';

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

describe('kafkajs request queue timer', () => {
  let dev: DevKafka;
  let kafka: Kafka;
  let producer: Producer;

  beforeAll(async () => {
    ({ dev, kafka } = await startBroker());
    producer = kafka.producer({ allowAutoTopicCreation: false });
    await producer.connect();
  });
  afterAll(async () => {
    await producer?.disconnect();
    await dev?.stop();
  });

  it('is installed by createKafka', () => {
    expect(kafkajsRequestQueue().prototype.scheduleCheckPendingRequests).toBe(scheduleCheckWhenPending);
  });

  it('leaves an idle connection without a timer loop', async () => {
    // A request and its answer: the queue looks at itself after every answer (fulfillRequest).
    await producer.send({ topic: 'chat.events', messages: [{ key: 'k', value: 'v' }] });
    const looks = vi.spyOn(kafkajsRequestQueue().prototype, 'checkPendingRequests');
    try {
      await sleep(300);
      // Unfixed kafkajs 2.2.4 looks again every millisecond, for ever: hundreds of looks here.
      expect(looks.mock.calls.length).toBeLessThan(5);
    } finally {
      looks.mockRestore();
    }
  });

  it('still sends a request that waited for a client-side throttle, when the throttle ends', async () => {
    const Queue = kafkajsRequestQueue() as unknown as new (options: object) => {
      maybeThrottle(ms: number): void;
      push(request: object): void;
      destroy(): void;
    };
    const queue = new Queue({ maxInFlightRequests: null, requestTimeout: 1000, enforceRequestTimeout: false, clientId: 'test', broker: 'none:0', logger: quiet });
    const pushedAt = Date.now();
    const sent = new Promise<number>((resolve) => {
      queue.maybeThrottle(80);
      queue.push({ entry: { correlationId: 1, resolve: () => undefined, reject: () => undefined }, expectResponse: false, sendRequest: () => resolve(Date.now()) });
    });
    try {
      expect(await Promise.race([sent, sleep(2000).then(() => -1)])).toBeGreaterThanOrEqual(pushedAt + 75);
    } finally {
      queue.destroy();
    }
  });

  it('sends a request that waited for a free slot once an answer frees one', async () => {
    const Queue = kafkajsRequestQueue() as unknown as new (options: object) => {
      push(request: object): void;
      fulfillRequest(response: { correlationId: number; payload: Buffer; size: number }): void;
      destroy(): void;
    };
    const queue = new Queue({ maxInFlightRequests: 1, requestTimeout: 1000, enforceRequestTimeout: false, clientId: 'test', broker: 'none:0', logger: quiet });
    const order: number[] = [];
    const answered = new Promise<void>((resolve) => {
      queue.push({ entry: { correlationId: 1, resolve: () => undefined, reject: () => undefined }, expectResponse: true, sendRequest: () => order.push(1) });
      queue.push({ entry: { correlationId: 2, resolve: () => resolve(), reject: () => undefined }, expectResponse: true, sendRequest: () => order.push(2) });
    });
    try {
      expect(order).toEqual([1]);
      queue.fulfillRequest({ correlationId: 1, payload: Buffer.alloc(0), size: 0 });
      expect(order).toEqual([1, 2]);
      queue.fulfillRequest({ correlationId: 2, payload: Buffer.alloc(0), size: 0 });
      await answered;
    } finally {
      queue.destroy();
    }
  });
});
