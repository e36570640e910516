import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { APPS, fromRoot, type App } from './paths';

/**
 * YAML with merge keys (`<<: *anchor`, as docker-compose.yml uses). Written against the API that
 * yaml v1 and v2 share (default export; `parse`, `parseAllDocuments`, `toJSON`), whichever version
 * the workspace root resolves.
 */
export function readYaml<T = unknown>(file: string): T {
  return YAML.parse(readFileSync(file, 'utf8'), { merge: true } as never) as T;
}

export function parseYamlDocuments(text: string): unknown[] {
  const documents = YAML.parseAllDocuments(text, { merge: true } as never) as unknown as Array<{
    errors: Array<{ message: string }>;
    toJSON(): unknown;
  }>;
  const errors = documents.flatMap((d) => d.errors.map((e) => e.message));
  if (errors.length > 0) throw new Error(`invalid YAML: ${errors.join('; ')}`);
  return documents.map((d) => d.toJSON()).filter((d) => d !== null && d !== undefined);
}

export function readYamlDocuments(file: string): unknown[] {
  return parseYamlDocuments(readFileSync(file, 'utf8'));
}

/** The variables documented in a `NAME=value  # comment` file (.env.example and the like). */
export function documentedVariables(file: string): Set<string> {
  const names = new Set<string>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const match = /^([A-Z][A-Z0-9_]*)=/.exec(line);
    if (match) names.add(match[1]!);
  }
  return names;
}

export const envExampleVariables = () => documentedVariables(fromRoot('.env.example'));

/** Each app's default PORT, read from its config schema (`PORT: Env.port(8081, ...)`). */
export function defaultPorts(): Record<App, number> {
  const ports = {} as Record<App, number>;
  for (const app of APPS) {
    const source = readFileSync(fromRoot('apps', app, 'src', 'config.ts'), 'utf8');
    const match = /PORT:\s*Env\.port\(\s*(\d+)/.exec(source);
    if (!match) throw new Error(`apps/${app}/src/config.ts: no PORT: Env.port(<default>, ...)`);
    ports[app] = Number(match[1]);
  }
  return ports;
}

/** An executable named by `envVar`, else found on PATH; undefined when there is none. */
export function findTool(name: string, envVar?: string): string | undefined {
  const candidates = [
    ...(envVar && process.env[envVar] ? [process.env[envVar]!] : []),
    ...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, name)),
  ];
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to the end (with a time limit), collecting its output. */
export function run(
  command: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? fromRoot(),
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    // A child that exits without reading its input closes the pipe: not an error here.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

export function runSync(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): RunResult {
  const result = spawnSync(command, args, { cwd: options.cwd ?? fromRoot(), env: options.env ?? process.env, encoding: 'utf8' });
  return { code: result.status, signal: result.signal, stdout: result.stdout ?? '', stderr: result.stderr ?? '' };
}

/** Docker/compose durations: 1m30s, 500ms, 10s. */
export function durationMs(value: string | number): number {
  if (typeof value === 'number') return value * 1000;
  const parts = [...value.matchAll(/(\d+(?:\.\d+)?)(ms|us|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== value) throw new Error(`not a duration: ${value}`);
  const unit = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;
  return parts.reduce((sum, p) => sum + Number(p[1]) * unit[p[2] as keyof typeof unit], 0);
}

export const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
