// @vivier/dev-kafka: an in-memory Kafka for dev and tests, without Docker or a JVM.
// It hosts librdkafka's mock cluster in a small C child process (src/mock-broker.c) and
// drives its fault injection over a line protocol on the child's stdin/stdout.
// Production uses a real Kafka; nothing here may leak into service code.
import { execFile, spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { DevKafkaCommandError } from './errors';

export { DevKafkaCommandError } from './errors';
export { startControlServer } from './control-server';
export type { ControlServer } from './control-server';

const execFileAsync = promisify(execFile);

const SOURCE_PATH = fileURLToPath(new URL('./mock-broker.c', import.meta.url));
/** Absolute path of the compiled mock broker (git-ignored, built on demand). */
export const BINARY_PATH = fileURLToPath(new URL('../bin/mock-broker', import.meta.url));

const INSTALL_HINT = 'install the compiler and headers with: apt-get install -y gcc librdkafka-dev';
const STOP_GRACE_MS = 3000;
const STDERR_TAIL_LINES = 30;

export interface DevKafkaTopic {
  name: string;
  partitions: number;
}

export interface DevKafkaOptions {
  /** Number of brokers, ids 1..N. Default 1. */
  brokers?: number;
  /** Topics created before the ready line; replication factor is min(3, brokers). */
  topics?: DevKafkaTopic[];
  /** How long to wait for the ready line. Default 30000 ms (a loaded CI machine has taken over 10 s). */
  readyTimeoutMs?: number;
  /** Forward librdkafka's stderr log lines to this sink (default: kept only for error messages). */
  onLog?: (line: string) => void;
}

export interface DevKafkaExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when stop() (or a `quit` command) caused the exit. */
  expected: boolean;
}

export interface DevKafka {
  /** host:port of every broker, in broker id order (broker 1 first). */
  readonly bootstrap: string[];
  readonly brokers: number;
  /** Process id of the mock-broker child (for tooling that supervises it). */
  readonly pid: number;
  /** Resolves once the child process has exited, for whatever reason. */
  readonly exited: Promise<DevKafkaExit>;
  /** Closes the broker's connections and refuses new ones. Does NOT move partition leaders. */
  brokerDown(id: number): Promise<void>;
  brokerUp(id: number): Promise<void>;
  /** Adds a delay to every response of the broker. */
  setRtt(id: number, ms: number): Promise<void>;
  /** The next `count` requests of `apiKey` (to any broker) fail with `errorCode`. */
  pushRequestErrors(apiKey: number, errorCode: number, count?: number): Promise<void>;
  /** Like pushRequestErrors but only for requests to one broker; takes precedence over cluster errors. */
  pushBrokerRequestErrors(brokerId: number, apiKey: number, errorCode: number, count?: number): Promise<void>;
  createTopic(name: string, partitions: number): Promise<void>;
  /** Moves a partition's leader; brokerId -1 leaves it leaderless. Creates the topic if missing. */
  setLeader(topic: string, partition: number, brokerId: number): Promise<void>;
  /** Pins the coordinator of a consumer group (default: hash of the group id over the brokers). */
  setGroupCoordinator(groupId: string, brokerId: number): Promise<void>;
  /** Sends one raw protocol line (see README); rejects with the broker's `error` text. */
  command(line: string): Promise<void>;
  stop(): Promise<void>;
}

function isUpToDate(): boolean {
  if (!existsSync(BINARY_PATH)) return false;
  return statSync(BINARY_PATH).mtimeMs >= statSync(SOURCE_PATH).mtimeMs;
}

let building: Promise<string> | undefined;

/**
 * Compiles bin/mock-broker when it is missing or older than src/mock-broker.c.
 * Resolves to the binary path.
 */
export function ensureBuilt(): Promise<string> {
  if (isUpToDate()) return Promise.resolve(BINARY_PATH);
  building ??= build().finally(() => {
    building = undefined;
  });
  return building;
}

async function build(): Promise<string> {
  mkdirSync(dirname(BINARY_PATH), { recursive: true });
  // Vitest runs test files in parallel workers: compile to a private file and rename, so a
  // concurrent build never exposes a half-written binary.
  const tmp = `${BINARY_PATH}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  // CC may carry flags ("gcc -m64"), as in make.
  const [cc = 'cc', ...ccFlags] = (process.env.CC ?? 'cc').trim().split(/\s+/);
  try {
    await execFileAsync(cc, [...ccFlags, '-O2', '-Wall', '-o', tmp, SOURCE_PATH, '-lrdkafka']);
    renameSync(tmp, BINARY_PATH);
  } catch (err) {
    rmSync(tmp, { force: true });
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') {
      throw new Error(`dev-kafka: C compiler "${cc}" not found; ${INSTALL_HINT}`, { cause: err });
    }
    const stderr = (e.stderr ?? '').trim();
    const missingLib = /rdkafka(_mock)?\.h|-lrdkafka/.test(stderr);
    throw new Error(
      `dev-kafka: compiling ${SOURCE_PATH} failed` +
        (missingLib ? ' (librdkafka headers/library missing)' : '') +
        `; ${INSTALL_HINT}\n${stderr}`,
      { cause: err },
    );
  }
  return BINARY_PATH;
}

function assertInt(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(`dev-kafka: ${name} must be an integer >= ${min}, got ${String(value)}`);
  }
}

function assertToken(name: string, value: string): void {
  // One whitespace-separated token per argument is all the line protocol understands.
  if (typeof value !== 'string' || !/^[A-Za-z0-9._-]{1,249}$/.test(value)) {
    throw new RangeError(`dev-kafka: ${name} must match [A-Za-z0-9._-]{1,249}, got ${JSON.stringify(value)}`);
  }
}

/** Starts a mock Kafka cluster and resolves once it accepts connections. */
export async function startDevKafka(options: DevKafkaOptions = {}): Promise<DevKafka> {
  const brokers = options.brokers ?? 1;
  assertInt('brokers', brokers, 1);
  const args = ['--brokers', String(brokers)];
  for (const t of options.topics ?? []) {
    assertToken('topic name', t.name);
    assertInt('partitions', t.partitions, 1);
    args.push('--topic', `${t.name}:${t.partitions}`);
  }
  const binary = await ensureBuilt();
  const child = spawn(binary, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  return attach(child, brokers, options);
}

interface Waiter {
  command: string;
  resolve: () => void;
  reject: (err: Error) => void;
}

function attach(
  child: ChildProcessWithoutNullStreams,
  brokers: number,
  options: DevKafkaOptions,
): Promise<DevKafka> {
  const readyTimeoutMs = options.readyTimeoutMs ?? 30_000;
  const stderrTail: string[] = [];
  // Replies come back strictly in command order (the child handles one line at a time),
  // so a FIFO of waiters is the command queue.
  const waiters: Waiter[] = [];
  let stopping = false;
  let quitSent = false;
  let exitInfo: DevKafkaExit | undefined;
  let onReadyLine: ((line: string) => void) | undefined;

  const tail = (): string =>
    stderrTail.length ? `\n--- mock-broker stderr ---\n${stderrTail.join('\n')}` : '';

  createInterface({ input: child.stderr }).on('line', (line) => {
    stderrTail.push(line);
    if (stderrTail.length > STDERR_TAIL_LINES) stderrTail.shift();
    options.onLog?.(line);
  });

  let resolveExited: (info: DevKafkaExit) => void = () => {};
  const exited = new Promise<DevKafkaExit>((resolve) => {
    resolveExited = resolve;
  });
  const onGone = (info: DevKafkaExit, err: Error): void => {
    if (exitInfo) return;
    exitInfo = info;
    for (const w of waiters.splice(0)) w.reject(err);
    resolveExited(info);
  };
  // 'close' rather than 'exit': it waits for stdout/stderr to drain, so the last replies are
  // delivered and the stderr tail in the error message is complete.
  child.once('close', (code, signal) => {
    onGone(
      { code, signal, expected: stopping || quitSent },
      new Error(`dev-kafka: mock broker exited (code ${String(code)}, signal ${String(signal)})${tail()}`),
    );
  });
  // A failed spawn (e.g. EACCES) emits 'error' and no 'exit'.
  child.once('error', (err) => onGone({ code: null, signal: null, expected: false }, err));
  // Writes after the child died raise EPIPE here; the exit handler already rejected the callers.
  child.stdin.on('error', () => {});

  createInterface({ input: child.stdout }).on('line', (line) => {
    if (onReadyLine) {
      onReadyLine(line);
      return;
    }
    const w = waiters.shift();
    if (!w) return; // stray output; the protocol never produces it
    if (line === 'ok') w.resolve();
    else w.reject(new DevKafkaCommandError(w.command, line.replace(/^error\s*/, '')));
  });

  const command = (line: string): Promise<void> => {
    if (/[\r\n]/.test(line)) return Promise.reject(new RangeError('dev-kafka: command must be one line'));
    if (exitInfo) return Promise.reject(new Error('dev-kafka: mock broker is not running'));
    if (stopping) return Promise.reject(new Error('dev-kafka: mock broker is stopping'));
    if (line.trim() === 'quit') quitSent = true;
    return new Promise<void>((resolve, reject) => {
      waiters.push({ command: line, resolve, reject });
      child.stdin.write(`${line}\n`);
    });
  };

  const brokerId = (id: number): string => {
    assertInt('broker id', id, 1);
    if (id > brokers) throw new RangeError(`dev-kafka: broker id ${id} > broker count ${brokers}`);
    return String(id);
  };
  // Argument errors must reject, not throw synchronously: callers await these.
  const guarded =
    <A extends unknown[]>(build: (...a: A) => string) =>
    (...a: A): Promise<void> => {
      let line: string;
      try {
        line = build(...a);
      } catch (err) {
        return Promise.reject(err as Error);
      }
      return command(line);
    };

  let stopPromise: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopPromise ??= (async () => {
      stopping = true;
      if (exitInfo) return;
      // EOF is the clean shutdown request; SIGKILL only if the cluster hangs in destroy.
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      try {
        await exited;
      } finally {
        clearTimeout(timer);
      }
    })();
    return stopPromise;
  };

  return new Promise<DevKafka>((resolve, reject) => {
    const fail = (err: Error): void => {
      onReadyLine = undefined;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(err);
    };
    const timer = setTimeout(
      () => fail(new Error(`dev-kafka: mock broker not ready after ${readyTimeoutMs} ms${tail()}`)),
      readyTimeoutMs,
    );
    void exited.then((info) => {
      if (onReadyLine) {
        fail(
          new Error(
            `dev-kafka: mock broker exited before ready (code ${String(info.code)}, signal ${String(info.signal)})${tail()}`,
          ),
        );
      }
    });
    child.once('error', (err) => {
      if (onReadyLine)
        fail(new Error(`dev-kafka: cannot start ${BINARY_PATH}: ${err.message}`, { cause: err }));
    });
    onReadyLine = (line) => {
      let bootstrap: string[];
      try {
        const msg = JSON.parse(line) as { ready?: unknown; bootstrap?: unknown };
        if (msg.ready !== true || typeof msg.bootstrap !== 'string') throw new Error('not a ready line');
        bootstrap = msg.bootstrap.split(',').filter(Boolean);
      } catch {
        fail(new Error(`dev-kafka: unexpected first line from mock broker: ${line}${tail()}`));
        return;
      }
      onReadyLine = undefined;
      clearTimeout(timer);
      resolve({
        bootstrap,
        brokers,
        pid: child.pid ?? -1,
        exited,
        brokerDown: guarded((id: number) => `down ${brokerId(id)}`),
        brokerUp: guarded((id: number) => `up ${brokerId(id)}`),
        setRtt: guarded((id: number, ms: number) => {
          assertInt('rtt ms', ms, 0);
          return `rtt ${brokerId(id)} ${ms}`;
        }),
        pushRequestErrors: guarded((apiKey: number, errorCode: number, count = 1) => {
          assertInt('apiKey', apiKey, 0);
          assertInt('errorCode', errorCode, Number.MIN_SAFE_INTEGER);
          assertInt('count', count, 1);
          return `errors ${apiKey} ${errorCode} ${count}`;
        }),
        pushBrokerRequestErrors: guarded((id: number, apiKey: number, errorCode: number, count = 1) => {
          assertInt('apiKey', apiKey, 0);
          assertInt('errorCode', errorCode, Number.MIN_SAFE_INTEGER);
          assertInt('count', count, 1);
          return `broker-errors ${brokerId(id)} ${apiKey} ${errorCode} ${count}`;
        }),
        createTopic: guarded((name: string, partitions: number) => {
          assertToken('topic name', name);
          assertInt('partitions', partitions, 1);
          return `topic ${name} ${partitions}`;
        }),
        setLeader: guarded((topic: string, partition: number, leader: number) => {
          assertToken('topic name', topic);
          assertInt('partition', partition, 0);
          // -1 makes the partition leaderless, a fault the mock supports.
          return `leader ${topic} ${partition} ${leader === -1 ? '-1' : brokerId(leader)}`;
        }),
        setGroupCoordinator: guarded((groupId: string, leader: number) => {
          assertToken('group id', groupId);
          return `coordinator group ${groupId} ${brokerId(leader)}`;
        }),
        command,
        stop,
      });
    };
  });
}
