import type { FastifyInstance } from 'fastify';

/** A step still running this long gets a warning naming it (and another when it ends). */
export const SLOW_SHUTDOWN_STEP_MS = 5000;

declare module 'fastify' {
  interface FastifyInstance {
    /** The named steps of a close (closeStep), so that a stop that hangs says where. */
    shutdownSteps: ShutdownSteps;
  }
}

/**
 * What a close is doing: its named steps under way. runService logs them when the shutdown timeout
 * ends the process, so the log names the step that held the stop up instead of only saying that it
 * timed out.
 */
export class ShutdownSteps {
  private readonly steps = new Map<symbol, { step: string; started: number }>();

  begin(step: string): symbol {
    const token = Symbol(step);
    this.steps.set(token, { step, started: performance.now() });
    return token;
  }

  end(token: symbol): number {
    const entry = this.steps.get(token);
    this.steps.delete(token);
    return entry ? performance.now() - entry.started : 0;
  }

  /** The steps under way, oldest first, with how long each has run (ms). */
  running(): Array<{ step: string; ms: number }> {
    const now = performance.now();
    return [...this.steps.values()].map(({ step, started }) => ({ step, ms: Math.round(now - started) }));
  }
}

/** Where a close stands: the steps under way, and the connections still open (null if unknown). */
export interface CloseState {
  running: Array<{ step: string; ms: number }>;
  openConnections: number | null;
}

/**
 * Reads where the app's close stands, for the report of a close that hangs: its steps under way
 * (closeStep) and the server's open connections (requests in flight, WebSockets: the server
 * closes, and the onClose steps begin, once none is left). Answers within a second, with the count
 * unknown if the server does not give it by then.
 */
export async function closeState(app: FastifyInstance): Promise<CloseState> {
  const running = app.hasDecorator('shutdownSteps') ? app.shutdownSteps.running() : [];
  const openConnections = await new Promise<number | null>((resolve) => {
    setTimeout(() => resolve(null), 1000).unref();
    app.server.getConnections((error, count) => resolve(error ? null : count));
  });
  return { running, openConnections };
}

/**
 * Registers a named step of the service's close: an onClose hook (after the server has closed its
 * last connection), or a preClose hook (before Fastify closes the server; on SIGTERM runService has
 * already stopped listening by then). Fastify runs preClose hooks in the order they were added, and
 * onClose hooks last added first. The step is timed (timedStep).
 */
export function closeStep(app: FastifyInstance, step: string, run: () => Promise<unknown>, hook: 'onClose' | 'preClose' = 'onClose'): void {
  app.addHook(hook, async () => {
    await timedStep(app, step, run);
  });
}

/**
 * Runs one step of a close, timed: it is logged at debug level when it ends, with a warning when it
 * runs over SLOW_SHUTDOWN_STEP_MS (once while it runs, once at its end), and it shows in the
 * shutdown-timeout log while it runs. For the parts of a closeStep that can each take long.
 */
export async function timedStep<T>(app: FastifyInstance, step: string, run: () => Promise<T>): Promise<T> {
  // (An app not made by createServiceApp has no record of steps: the step is only timed.)
  const steps = app.hasDecorator('shutdownSteps') ? app.shutdownSteps : new ShutdownSteps();
  const token = steps.begin(step);
  const slow = setTimeout(() => app.log.warn({ step, afterMs: SLOW_SHUTDOWN_STEP_MS }, 'a shutdown step is still running'), SLOW_SHUTDOWN_STEP_MS);
  slow.unref();
  let failed = true;
  try {
    const result = await run();
    failed = false;
    return result;
  } finally {
    clearTimeout(slow);
    const ms = Math.round(steps.end(token));
    if (ms >= SLOW_SHUTDOWN_STEP_MS) app.log.warn({ step, ms, failed }, 'a slow shutdown step ended');
    else app.log.debug({ step, ms, failed }, 'shutdown step ended');
  }
}
