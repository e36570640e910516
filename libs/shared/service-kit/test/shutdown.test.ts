import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { Client } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';

const fixture = fileURLToPath(new URL('./fixtures/slow-service.ts', import.meta.url));
let child: ChildProcess | undefined;

afterEach(() => {
  if (child && child.exitCode === null) child.kill('SIGKILL');
});

function startFixture(env: Record<string, string>) {
  child = spawn(process.execPath, ['--import', 'tsx', fixture], {
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
  const port = new Promise<number>((resolve, reject) => {
    const timer = setInterval(() => {
      const m = /LISTENING (\d+)/.exec(out);
      if (m) {
        clearInterval(timer);
        resolve(Number(m[1]));
      }
    }, 20);
    void exited.then(() => {
      clearInterval(timer);
      reject(new Error(`exited early: ${err}`));
    });
  });
  port.catch(() => undefined); // the config test expects the early exit
  /** Resolves once the fixture's /slow route has a request in hand (a fixed pause was too short on a loaded machine). */
  const slowStarted = async () => {
    for (const deadline = Date.now() + 15_000; !out.includes('SLOW STARTED'); ) {
      if (Date.now() > deadline) throw new Error(`/slow never started: ${out}${err}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  return { port, exited, output: () => out, errors: () => err, slowStarted };
}

/** The fixture's "shutdown timed out" log line. */
function timeoutLog(output: string): { openConnections: number | null; running: Array<{ step: string; ms: number }> } {
  const line = output.split('\n').find((l) => l.includes('shutdown timed out'));
  if (!line) throw new Error(`no shutdown timeout in the log: ${output}`);
  return JSON.parse(line) as { openConnections: number | null; running: Array<{ step: string; ms: number }> };
}

/** Whether a new connection to `port` is accepted (one-off, `connection: close`: it leaves nothing open). */
const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/health', agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(true));
    });
    req.on('error', () => resolve(false));
  });

/** Resolves once nothing accepts connections on `port` any more. */
async function refusing(port: number): Promise<void> {
  for (const deadline = Date.now() + 10_000; await accepts(port); ) {
    if (Date.now() > deadline) throw new Error(`port ${port} still answers`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('graceful shutdown', () => {
  it('finishes in-flight requests, refuses new ones, closes resources and exits 0 on SIGTERM', async () => {
    const proc = startFixture({});
    const port = await proc.port;
    const inFlight = fetch(`http://127.0.0.1:${port}/slow?ms=1200`);
    await proc.slowStarted();
    child!.kill('SIGTERM');
    await refusing(port);
    const res = await inFlight;
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ done: true });
    expect(await proc.exited).toBe(0);
    expect(proc.output()).toContain('pools closed');
    expect(proc.output()).toContain('shutdown complete');
  });

  it('SIGTERM leaves an idle keep-alive connection to its client: a request sent on it is answered and closes it', async () => {
    const proc = startFixture({ SHUTDOWN_GRACE_MS: '10000' });
    const port = await proc.port;
    const client = new Client(`http://127.0.0.1:${port}`, { pipelining: 1, keepAliveTimeout: 60_000 });
    try {
      const first = await client.request({ method: 'GET', path: '/health' });
      await first.body.text();
      expect(first.headers.connection).toBe('keep-alive');
      child!.kill('SIGTERM');
      // The connection was idle at the signal. Had it been closed under us, the request below would
      // go out on a new connection and be refused: the service no longer listens.
      await refusing(port);
      const second = await client.request({ method: 'GET', path: '/ready' });
      expect(second.statusCode).toBe(503); // draining: load balancers stop sending
      expect(second.headers.connection).toBe('close');
      await second.body.text();
      // No connection left: the service ends without waiting out the 10 s grace.
      const answeredAt = Date.now();
      expect(await proc.exited).toBe(0);
      expect(Date.now() - answeredAt).toBeLessThan(3000);
      expect(proc.output()).toContain('waiting for clients to release their connections');
    } finally {
      await client.destroy();
    }
  });

  it('SIGINT (Ctrl-C) closes idle connections at once instead of waiting for their clients', async () => {
    const proc = startFixture({ SHUTDOWN_GRACE_MS: '10000' });
    const port = await proc.port;
    const client = new Client(`http://127.0.0.1:${port}`, { pipelining: 1, keepAliveTimeout: 60_000 });
    try {
      await (await client.request({ method: 'GET', path: '/health' })).body.text();
      const signalledAt = Date.now();
      child!.kill('SIGINT');
      expect(await proc.exited).toBe(0);
      expect(Date.now() - signalledAt).toBeLessThan(3000);
      expect(proc.output()).not.toContain('waiting for clients');
    } finally {
      await client.destroy();
    }
  });

  it('gives up after the shutdown timeout with a non-zero exit', async () => {
    const proc = startFixture({ SHUTDOWN_TIMEOUT_MS: '300', SHUTDOWN_GRACE_MS: '200' });
    const port = await proc.port;
    const hanging = fetch(`http://127.0.0.1:${port}/slow?ms=5000`).catch(() => undefined);
    await proc.slowStarted();
    child!.kill('SIGTERM');
    expect(await proc.exited).toBe(1);
    await hanging;
    // The log says where it hung: the request's connection still open, no close step begun.
    expect(timeoutLog(proc.output())).toMatchObject({ openConnections: 1, running: [] });
  });

  it('names the close step that held the stop up when the shutdown timeout ends it', async () => {
    const proc = startFixture({ SHUTDOWN_TIMEOUT_MS: '1000', SHUTDOWN_GRACE_MS: '0', HANG_CLOSE_MS: '30000' });
    await proc.port;
    child!.kill('SIGTERM');
    expect(await proc.exited).toBe(1);
    const log = timeoutLog(proc.output());
    expect(log).toMatchObject({ openConnections: 0, running: [{ step: 'test: hanging step' }] });
    expect(log.running[0]!.ms).toBeGreaterThan(0);

    // A preClose step is named the same way.
    const before = startFixture({ SHUTDOWN_TIMEOUT_MS: '1000', SHUTDOWN_GRACE_MS: '0', HANG_PRECLOSE_MS: '30000' });
    await before.port;
    child!.kill('SIGTERM');
    expect(await before.exited).toBe(1);
    expect(timeoutLog(before.output())).toMatchObject({ running: [{ step: 'test: hanging pre-close step' }] });
  });

  it('stops at start with a message naming a malformed variable', async () => {
    const proc = startFixture({ PORT: 'not-a-port' });
    expect(await proc.exited).toBe(78);
    expect(proc.errors()).toMatch(/PORT: has an invalid value "not-a-port"/);
  });
});
