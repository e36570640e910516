import { randomUUID } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createRedis } from './redis';

// The shared client's behaviour when its connection breaks, through a TCP relay in front of the
// real Redis that can swallow one reply and cut the connection (the command ran; its answer was lost).

interface Relay {
  url: string;
  /** The next reply from Redis after a command holding `marker` is dropped and both sockets are closed. */
  loseReplyTo(marker: string): void;
  close(): Promise<void>;
}

async function relay(target: URL): Promise<Relay> {
  const open = new Set<net.Socket>();
  let marker: string | undefined;
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 6379), target.hostname);
    open.add(client).add(upstream);
    let armed = false;
    client.on('data', (chunk) => {
      if (marker !== undefined && chunk.includes(marker)) {
        marker = undefined;
        armed = true;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (armed) {
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(chunk);
    });
    for (const s of [client, upstream]) {
      s.on('error', () => undefined);
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
        open.delete(s);
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(target.href);
  url.hostname = '127.0.0.1';
  url.port = String((server.address() as AddressInfo).port);
  return {
    url: url.href,
    loseReplyTo: (m) => {
      marker = m;
    },
    close: async () => {
      for (const s of open) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

describe('createRedis', () => {
  it('does not send a command again after a reconnect when its reply was lost (it may have run)', async () => {
    const direct = createRedis(process.env.REDIS_URL!, { keyPrefix: process.env.VIVIER_TEST_REDIS_PREFIX, name: 'redis-test-direct' });
    cleanup.push(() => direct.disconnect());
    const r = await relay(new URL(process.env.REDIS_URL!));
    cleanup.push(() => r.close());
    const client = createRedis(r.url, { keyPrefix: process.env.VIVIER_TEST_REDIS_PREFIX, name: 'redis-test-relayed' });
    client.on('error', () => undefined);
    cleanup.push(() => client.disconnect());
    await new Promise<void>((resolve) => client.once('ready', () => resolve()));

    const key = `redis-test:${randomUUID()}`;
    cleanup.push(async () => void (await direct.del(key)));
    r.loseReplyTo(key);
    // A non-idempotent command (a rate-limit script, a lease grant): it ran once; sent again it would count twice.
    await expect(client.incr(key)).rejects.toThrow();
    await new Promise<void>((resolve) => (client.status === 'ready' ? resolve() : client.once('ready', () => resolve())));
    // Whatever ioredis would resend after the reconnect has been sent by the time a later command answers.
    expect(await client.incr(`${key}:after`)).toBe(1);
    cleanup.push(async () => void (await direct.del(`${key}:after`)));
    expect(await direct.get(key)).toBe('1');
  });
});
