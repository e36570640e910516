import net from 'node:net';
import { Redis } from 'ioredis';
import { startDevKafka, type DevKafka } from '@vivier/dev-kafka';
import { allTopics } from '@vivier/contracts';

export async function checkRedis(url: string): Promise<void> {
  const redis = new Redis(url, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  try {
    await redis.connect();
    await redis.ping();
  } catch (error) {
    throw new Error(`Redis is not reachable at ${url}: ${(error as Error).message}. Start it or set REDIS_URL.`, {
      cause: error,
    });
  } finally {
    redis.disconnect();
  }
}

/** The dev broker (librdkafka mock cluster) with every topic the contracts define. */
export async function startKafka(brokers = 1): Promise<DevKafka> {
  return startDevKafka({ brokers, topics: allTopics().map((t) => ({ name: t.name, partitions: t.partitions })) });
}

/** Resolves when `port` can be bound on 127.0.0.1; otherwise names the owner we expected there. */
export async function ensurePortFree(port: number, owner: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const server = net.createServer();
    server.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        new Error(
          error.code === 'EADDRINUSE'
            ? `port ${port} (${owner}) is already in use: stop whatever listens there, or choose another port`
            : `port ${port} (${owner}) cannot be used: ${error.message}`,
        ),
      );
    });
    server.listen(port, '127.0.0.1', () => server.close(() => resolve()));
  });
}
