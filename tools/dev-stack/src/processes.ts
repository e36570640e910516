import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ROOT, serviceMain, type Service } from './paths';

export interface ServiceProcess {
  name: string;
  port: number;
  child: ChildProcess;
  /** Last lines of output, shown when the process dies early. */
  tail: string[];
  exited: Promise<number | null>;
}

const COLORS = ['\x1b[36m', '\x1b[35m', '\x1b[33m', '\x1b[32m', '\x1b[34m', '\x1b[31m'];

/** Starts one service as its own Node process (as in production), with the project's Node 22. */
export function startServiceProcess(
  service: Service,
  options: {
    name?: string;
    port: number;
    env: NodeJS.ProcessEnv;
    echo?: boolean;
    colorIndex?: number;
    onLine?: (line: string) => void;
  },
): ServiceProcess {
  const name = options.name ?? service;
  const child = spawn(process.execPath, ['--import', 'tsx', serviceMain(service)], {
    cwd: ROOT,
    env: { ...options.env, PORT: String(options.port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tail: string[] = [];
  const color = COLORS[(options.colorIndex ?? 0) % COLORS.length];
  const prefix = process.stdout.isTTY ? `${color}${name.padEnd(8)}\x1b[0m│ ` : `${name.padEnd(8)}| `;
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on('line', (line) => {
      tail.push(line);
      options.onLine?.(line);
      if (tail.length > 40) tail.shift();
      if (options.echo) process.stdout.write(prefix + line + '\n');
    });
  }
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { name, port: options.port, child, tail, exited };
}

/** Polls GET /ready until it answers 200; fails fast if the process exits. */
export async function waitReady(proc: ServiceProcess, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitCode: number | null | undefined;
  void proc.exited.then((code) => {
    exitCode = code;
  });
  let last = '';
  while (Date.now() < deadline) {
    if (exitCode !== undefined) {
      throw new Error(`${proc.name} exited with code ${exitCode} before it was ready:\n${proc.tail.slice(-15).join('\n')}`);
    }
    try {
      const res = await fetch(`http://127.0.0.1:${proc.port}/ready`, { signal: AbortSignal.timeout(2000) });
      if (res.status === 200) return;
      last = `${res.status} ${await res.text()}`;
    } catch (error) {
      last = (error as Error).message;
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`${proc.name} was not ready after ${timeoutMs} ms (last answer: ${last})`);
}

/**
 * SIGINT (a developer's stop: in-flight requests finish, idle connections close at once, without
 * the SIGTERM grace that a service behind a load balancer gives them), then SIGKILL after `graceMs`.
 */
export async function stopProcess(proc: ServiceProcess, graceMs = 15_000): Promise<number | null> {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null) return proc.child.exitCode;
  proc.child.kill('SIGINT');
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), graceMs);
  const code = await proc.exited;
  clearTimeout(timer);
  return code;
}
