import type { FastifyInstance } from 'fastify';
import { ConfigError } from './config';

export interface RunServiceOptions {
  service: string;
  host: string;
  port: number;
  shutdownTimeoutMs: number;
}

/**
 * Owns the process: listens, and on SIGTERM/SIGINT stops accepting connections, lets in-flight
 * requests finish (Fastify's close waits for them), then runs every onClose hook (pools, consumers).
 * A second signal, or the timeout, ends the process at once.
 */
export async function runService(app: FastifyInstance, options: RunServiceOptions): Promise<void> {
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      app.log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    app.log.info({ signal }, 'shutting down: draining in-flight requests');
    const timer = setTimeout(() => {
      app.log.error({ timeoutMs: options.shutdownTimeoutMs }, 'shutdown timed out: exiting');
      process.exit(1);
    }, options.shutdownTimeoutMs);
    timer.unref();
    try {
      await app.close();
      app.log.info('shutdown complete');
      process.exit(0);
    } catch (error) {
      app.log.error({ err: error }, 'shutdown failed');
      process.exit(1);
    }
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));

  try {
    await app.listen({ host: options.host, port: options.port });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') {
      app.log.fatal(`${options.service}: port ${options.port} on ${options.host} is already in use`);
    } else {
      app.log.fatal({ err: error }, `${options.service}: could not listen`);
    }
    await app.close().catch(() => undefined);
    process.exit(1);
  }
}

/** Runs `main`, turning a ConfigError into one readable message and exit code 78 (EX_CONFIG). */
export function startProcess(main: () => Promise<void>): void {
  main().catch((error: unknown) => {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(78);
    }
    process.stderr.write(`fatal: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
}
