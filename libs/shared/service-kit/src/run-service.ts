import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { ConfigError } from './config';
import { closeState } from './shutdown-steps';
import { stopTracing } from './tracing';

export interface RunServiceOptions {
  service: string;
  host: string;
  port: number;
  shutdownTimeoutMs: number;
  /** SHUTDOWN_GRACE_MS: how long open connections may stay after SIGTERM (see releaseConnections). */
  shutdownGraceMs?: number;
}

/**
 * Owns the process: listens, and on SIGTERM/SIGINT stops accepting connections, lets in-flight
 * requests finish (Fastify's close waits for them), then runs every onClose hook (pools, consumers).
 * SIGTERM (an orchestrator's stop) first gives open keep-alive connections up to `shutdownGraceMs`
 * to be released by their clients; SIGINT (a developer's Ctrl-C) does not wait for them.
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
    if (signal === 'SIGTERM' && (options.shutdownGraceMs ?? 0) > 0) {
      await releaseConnections(app, options.shutdownGraceMs!);
    }
    const timer = setTimeout(() => {
      // Where it hung: the close steps still running, and the connections still open.
      void closeState(app).then((state) => {
        app.log.error({ timeoutMs: options.shutdownTimeoutMs, ...state }, 'shutdown timed out: exiting');
        process.exit(1);
      });
    }, options.shutdownTimeoutMs);
    timer.unref();
    try {
      await app.close();
      await stopTracing(); // flushes the spans still buffered
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

/**
 * Stops listening but leaves the open connections to their clients for up to `graceMs`, ending as
 * soon as none is left. Closing an idle keep-alive connection under a client that is sending on it
 * at that moment fails that request with no answer, and HTTP/1.1 has no "going away" other than
 * `Connection: close` on a response. So: responses now carry it (a busy connection closes after its
 * answer), idle ones are closed by their clients (the gateway drops idle upstream connections after
 * 4 s, below the 5 s default grace), and only what is still open afterwards is closed by the server.
 */
async function releaseConnections(app: FastifyInstance, graceMs: number): Promise<void> {
  app.draining.active = true;
  // The base class's close stops accepting; http.Server#close would also cut the idle connections.
  net.Server.prototype.close.call(app.server);
  const deadline = Date.now() + graceMs;
  const open = () => new Promise<number>((resolve) => app.server.getConnections((_e, n) => resolve(n ?? 0)));
  let left = await open();
  app.log.info({ connections: left, graceMs }, 'stopped listening: waiting for clients to release their connections');
  while (left > 0 && Date.now() < deadline) {
    await sleep(50);
    left = await open();
  }
  if (left > 0) app.log.info({ connections: left }, 'grace over: closing the connections left');
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
