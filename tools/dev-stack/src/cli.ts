/**
 * The two commands of the README:
 *   npm start  →  cli.ts start : infrastructure + the five services, ready at http://127.0.0.1:8080
 *   npm test   →  cli.ts test  : lint, typecheck, then every project's tests against real services
 * and `cli.ts migrate` (provision + migrate only).
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { ROOT, SERVICES, type Service } from './paths';
import { ensurePortFree, startInfrastructure } from './stack';
import { startServiceProcess, stopProcess, waitReady, type ServiceProcess } from './processes';
import { LOCAL_DATABASE } from '@vivier/service-kit';

const say = (line: string) => process.stdout.write(`${line}\n`);

function fail(error: unknown): never {
  process.stderr.write(`\n✖ ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
}

const SERVICE_PORTS: Record<Exclude<Service, 'gateway'>, number> = { auth: 8081, chat: 8082, admin: 8083, worker: 8084 };

async function start(): Promise<void> {
  const started = performance.now();
  const gatewayPort = Number(process.env.PORT || 8080);
  const ports = SERVICES.map((s) => [s, Number(process.env[`${s.toUpperCase()}_PORT`] || SERVICE_PORTS[s])] as const);
  for (const [service, port] of [...ports, ['gateway', gatewayPort] as const]) await ensurePortFree(port, service);

  say('Starting Vivier\n');
  const infra = await startInfrastructure({ database: process.env.VIVIER_DB_NAME || LOCAL_DATABASE.database, say: (l) => say(`  ${l}`) });
  const procs: ServiceProcess[] = [];
  let stopping = false;
  const shutdown = async (code: number) => {
    if (stopping) return;
    stopping = true;
    say('\nStopping Vivier…');
    const gateway = procs.find((p) => p.name === 'gateway');
    if (gateway) await stopProcess(gateway);
    await Promise.all(procs.filter((p) => p !== gateway).map((p) => stopProcess(p)));
    await infra.stop();
    say('Stopped.');
    process.exit(code);
  };
  process.on('SIGINT', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));
  process.on('SIGHUP', () => void shutdown(0));
  // If whatever started us (npm, a terminal) is gone, take the whole stack down with us.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) void shutdown(0);
  }, 1000).unref();

  const base: NodeJS.ProcessEnv = { ...process.env, ...infra.env, NODE_ENV: process.env.NODE_ENV || 'development' };
  delete base.PORT;
  // Every service learns where the others listen (the gateway proxies to them; the worker asks chat for exports).
  const upstream = Object.fromEntries(ports.map(([s, p]) => [`${s.toUpperCase()}_URL`, `http://127.0.0.1:${p}`]));
  ports.forEach(([service, port], i) => {
    procs.push(
      startServiceProcess(service, {
        port,
        colorIndex: i,
        echo: process.env.VIVIER_QUIET !== '1',
        env: { ...base, ...upstream, DATABASE_URL: infra.serviceDatabaseUrls[service] },
      }),
    );
  });
  try {
    await Promise.all(procs.map((p) => waitReady(p)));
    procs.push(
      startServiceProcess('gateway', {
        port: gatewayPort,
        colorIndex: 4,
        echo: process.env.VIVIER_QUIET !== '1',
        env: { ...base, ...upstream, DATABASE_URL: '' },
      }),
    );
    await waitReady(procs[procs.length - 1]!);
  } catch (error) {
    process.stderr.write(`\n✖ ${(error as Error).message}\n`);
    await shutdown(1);
    return;
  }
  for (const p of procs) {
    void p.exited.then((code) => {
      if (!stopping) {
        process.stderr.write(`\n✖ ${p.name} exited unexpectedly (code ${code})\n${p.tail.slice(-10).join('\n')}\n`);
        void shutdown(1);
      }
    });
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  say(`\nVivier is ready at http://127.0.0.1:${gatewayPort}  (started in ${seconds} s; Ctrl-C stops everything)\n`);
}

async function migrate(): Promise<void> {
  const infra = await startInfrastructure({ database: process.env.VIVIER_DB_NAME || LOCAL_DATABASE.database, say: (l) => say(`  ${l}`) });
  await infra.stop();
}

function run(command: string, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: ROOT, stdio: 'inherit', env: process.env });
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}

async function test(extra: string[]): Promise<void> {
  const bin = (name: string) => `${ROOT}/node_modules/.bin/${name}`;
  for (const file of [RESULTS_FILE, FAULT_RESULTS_FILE]) rmSync(file, { force: true });
  const steps: Array<[string, string, string[]]> = [
    // The module-boundary rule needs nx's project graph cached, or it silently skips itself.
    ['project graph', bin('nx'), ['show', 'projects', '--json']],
    ['lint', bin('eslint'), ['.', '--max-warnings', '0', '--cache', '--cache-location', 'node_modules/.cache/eslint/']],
    ['typecheck', bin('tsc'), ['--noEmit', '-p', 'tsconfig.json']],
    [
      'test',
      bin('vitest'),
      // The whole suite, except (when no files are named) the fault suite, which runs next on its
      // own: it starts a dozen processes, and beside another test file it starves both.
      ['run', '--reporter=default', '--reporter=json', `--outputFile.json=${RESULTS_FILE}`, ...(extra.length === 0 ? ['--exclude', FAULT_SUITE] : extra)],
    ],
    ...(extra.length === 0
      ? [['fault suite', bin('vitest'), ['run', '--reporter=default', '--reporter=json', `--outputFile.json=${FAULT_RESULTS_FILE}`, FAULT_SUITE]] as [string, string, string[]]]
      : []),
  ];
  for (const [name, command, args] of steps) {
    const t = performance.now();
    say(`\n▶ ${name}`);
    const code = await run(command, args);
    say(`■ ${name} ${code === 0 ? 'passed' : 'FAILED'} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    if (code !== 0) {
      if (name === 'test' || name === 'fault suite') printSummary();
      process.exit(code);
    }
  }
  printSummary();
}

const RESULTS_FILE = `${ROOT}/node_modules/.cache/vitest/results.json`;
const FAULT_RESULTS_FILE = `${ROOT}/node_modules/.cache/vitest/fault-results.json`;
const FAULT_SUITE = 'tools/e2e/src/faults.test.ts';

/** One plain closing line that CI systems read: "N passed, N failed, N skipped" (both runs together). */
function printSummary(): void {
  const totals = { passed: 0, failed: 0, skipped: 0 };
  let read = 0;
  for (const file of [RESULTS_FILE, FAULT_RESULTS_FILE]) {
    try {
      const results = JSON.parse(readFileSync(file, 'utf8')) as { numPassedTests: number; numFailedTests: number; numPendingTests: number; numTodoTests: number };
      totals.passed += results.numPassedTests;
      totals.failed += results.numFailedTests;
      totals.skipped += results.numPendingTests + results.numTodoTests;
      read += 1;
    } catch {
      // not written (that run did not happen, or stopped early)
    }
  }
  if (read === 0) say('test results unavailable (the runner stopped before writing them)');
  else say(`${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
}

const [command = 'start', ...rest] = process.argv.slice(2);
const commands: Record<string, () => Promise<void>> = { start, migrate, test: () => test(rest) };
const fn = commands[command];
if (!fn) fail(`unknown command ${command}; use start, test or migrate`);
fn().catch(fail);
