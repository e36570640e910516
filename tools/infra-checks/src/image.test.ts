import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APPS, SERVICES_WITH_DATABASE, fromRoot } from './paths';
import { defaultPorts, findTool, run } from './support';

// The images run tools/build/bundle.mjs's output and nothing else (infra/docker/Dockerfile copies
// /out/<app> to /app). These tests bundle every app into a folder OUTSIDE the repository, so a
// bundle that still needed the workspace's node_modules or sources would fail here.

/** Node 22 (the images' Node): the repository's own, whatever runs vitest. */
const NODE = existsSync(fromRoot('node_modules/.bin/node')) ? fromRoot('node_modules/.bin/node') : process.execPath;
const lock = JSON.parse(readFileSync(fromRoot('package-lock.json'), 'utf8')) as {
  packages: Record<string, { version?: string }>;
};

let out = '';

beforeAll(async () => {
  out = await mkdtemp(path.join(os.tmpdir(), 'vivier-bundle-'));
  const result = await run(NODE, [fromRoot('tools/build/bundle.mjs'), 'all', '--out', out], { timeoutMs: 240_000 });
  expect(result.code, result.stderr + result.stdout).toBe(0);
}, 300_000);

afterAll(async () => {
  if (out) await rm(out, { recursive: true, force: true });
});

const files = (dir: string): string[] =>
  readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    return statSync(full).isDirectory() ? files(full) : [full];
  });

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('tools/build/bundle.mjs', () => {
  it('puts each app in one folder: bundle, migrations, and only the packages it cannot bundle', () => {
    for (const app of APPS) {
      const dir = path.join(out, app);
      expect(existsSync(path.join(dir, 'main.js')), `${app}/main.js`).toBe(true);
      const manifest = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
        type: string;
        dependencies: Record<string, string>;
      };
      expect(manifest.type).toBe('module');
      // External packages at exactly the versions package-lock.json resolved.
      for (const [name, version] of Object.entries(manifest.dependencies)) {
        expect(lock.packages[`node_modules/${name}`]?.version ?? lock.packages[`apps/${app}/node_modules/${name}`]?.version).toBe(version);
        expect(existsSync(path.join(dir, 'node_modules', name, 'package.json')), `${app}: ${name} copied`).toBe(true);
      }
      const all = files(dir).map((f) => path.relative(dir, f));
      expect(all.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts') && !f.includes('node_modules'))).toEqual([]);
      expect(all.filter((f) => f.startsWith('node_modules/@vivier/'))).toEqual([]);

      if ((SERVICES_WITH_DATABASE as readonly string[]).includes(app)) {
        expect(existsSync(path.join(dir, 'migrate.js')), `${app}/migrate.js`).toBe(true);
        const journal = readFileSync(path.join(dir, 'migrations', 'meta', '_journal.json'), 'utf8');
        expect(journal).toBe(readFileSync(fromRoot('libs', 'db', app, 'migrations', 'meta', '_journal.json'), 'utf8'));
      } else {
        expect(existsSync(path.join(dir, 'migrations'))).toBe(false);
      }
    }
    // The native argon2 addon stays external, with its platform package beside it.
    const auth = JSON.parse(readFileSync(path.join(out, 'auth', 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    expect(Object.keys(auth.dependencies)).toContain('@node-rs/argon2');
    expect(readdirSync(path.join(out, 'auth', 'node_modules', '@node-rs')).some((n) => n.startsWith('argon2-'))).toBe(true);
    // auth's other processes are bundled too (`npm run rotate-keys -w @vivier/auth` in the image).
    const scripts = (JSON.parse(readFileSync(fromRoot('apps/auth/package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    for (const script of Object.values(scripts)) {
      const entry = /^node (?:--import tsx )?src\/([\w-]+)\.ts$/.exec(script)?.[1];
      if (entry) expect(existsSync(path.join(out, 'auth', `${entry}.js`)), `auth/${entry}.js`).toBe(true);
    }
  });

  it('starts every bundle outside the repository far enough to refuse an invalid configuration', async () => {
    for (const app of APPS) {
      // A production environment with nothing set (outside production DATABASE_URL has a local
      // default); the gateway has a default for everything, so give it a bad port.
      const env = app === 'gateway' ? { PORT: 'not-a-port' } : { NODE_ENV: 'production' };
      const result = await run(NODE, [path.join(out, app, 'main.js')], { cwd: os.tmpdir(), env, timeoutMs: 30_000 });
      expect(result.stderr, `${app}: ${result.stderr}`).toContain(`${app}: invalid configuration`);
      expect(result.stderr).toMatch(app === 'gateway' ? /- PORT: has an invalid value/ : /- DATABASE_URL: is required/);
      expect(result.code, result.stderr).toBe(78);
    }
  });

  it('runs the gateway bundle: /health, /metrics, the Swagger UI assets, and a clean stop on SIGTERM', async () => {
    const port = await freePort();
    const { spawn } = await import('node:child_process');
    const child = spawn(NODE, [path.join(out, 'gateway', 'main.js')], {
      cwd: os.tmpdir(),
      env: {
        NODE_ENV: 'production',
        HOST: '127.0.0.1',
        PORT: String(port),
        LOG_LEVEL: 'warn',
        REDIS_URL: process.env.REDIS_URL || 'redis://127.0.0.1:6379',
        REDIS_KEY_PREFIX: `vivier-infra-checks:${process.pid}:`,
        INTERNAL_IDENTITY_SECRET: randomBytes(32).toString('hex'),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const base = `http://127.0.0.1:${port}`;
      await expect
        .poll(async () => (await fetch(`${base}/health`).catch(() => undefined))?.status, { timeout: 20_000, interval: 200 })
        .toBe(200);
      const metrics = await (await fetch(`${base}/metrics`)).text();
      expect(metrics).toContain('http_request_duration_seconds');
      expect(metrics).toContain('service="gateway"');
      // Read to the end: an unread response is a request still in flight, which the drain waits for.
      const docs = await fetch(`${base}/docs/static/swagger-ui.css`);
      const css = await docs.text();
      expect(docs.status, output).toBe(200);
      expect(css).toContain('.swagger-ui');
      child.kill('SIGTERM');
      expect(await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 15_000))]), output).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 60_000);
});

describe('migrations from the bundles, on a database made by infra/postgres/provision.sql', () => {
  const psql = findTool('psql');
  const adminUrl = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
  const id = `vivier_infra_${process.pid}_${Date.now() % 1_000_000}`;
  const roles = Object.fromEntries(SERVICES_WITH_DATABASE.map((s) => [s, `${id}_${s}`])) as Record<string, string>;
  const password = randomBytes(12).toString('hex');
  const urlOf = (role: string) => {
    const url = new URL(adminUrl);
    url.username = role;
    url.password = password;
    url.pathname = `/${id}`;
    return url.toString();
  };
  const provision = (extra: string[] = []) =>
    run(psql!, [
      '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-v', `db=${id}`,
      ...SERVICES_WITH_DATABASE.flatMap((s) => ['-v', `${s}_role=${roles[s]}`, '-v', `${s}_password=${password}`]),
      ...extra,
      '-f', fromRoot('infra/postgres/provision.sql'), adminUrl,
    ]);

  afterAll(async () => {
    if (!psql) return;
    await run(psql, ['-X', '-q', '-c', `drop database if exists "${id}" with (force)`, adminUrl]);
    for (const role of Object.values(roles)) await run(psql, ['-X', '-q', '-c', `drop role if exists "${role}"`, adminUrl]);
  });

  it('psql is installed (PostgreSQL client: backups, provisioning)', () => {
    expect(psql, 'psql not found: apt-get install postgresql-client').toBeDefined();
  });

  it('provisions the database, roles and schemas, twice without harm; refuses without passwords', async () => {
    const first = await provision();
    expect(first.code, first.stderr).toBe(0);
    const again = await provision();
    expect(again.code, again.stderr).toBe(0);
    const missing = await run(psql!, ['-X', '-q', '-v', `db=${id}_never`, '-f', fromRoot('infra/postgres/provision.sql'), adminUrl]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain('set -v auth_password');
  });

  it('applies each service migrations as its own role, then nothing on the second run', async () => {
    for (const service of SERVICES_WITH_DATABASE) {
      const journal = JSON.parse(readFileSync(fromRoot('libs', 'db', service, 'migrations', 'meta', '_journal.json'), 'utf8')) as {
        entries: unknown[];
      };
      const env = { NODE_ENV: 'production', DATABASE_URL: urlOf(roles[service]!) };
      const migrate = path.join(out, service, 'migrate.js');
      const first = await run(NODE, [migrate], { cwd: os.tmpdir(), env });
      expect(first.code, first.stderr).toBe(0);
      expect(first.stdout).toContain(`${service}: applied ${journal.entries.length} migration(s), 0 already applied`);
      const second = await run(NODE, [migrate], { cwd: os.tmpdir(), env });
      expect(second.stdout).toContain(`${service}: applied 0 migration(s), ${journal.entries.length} already applied`);
    }
    // Each role reaches its own schema only.
    const denied = await run(psql!, ['-X', '-c', 'select count(*) from auth.schema_migrations', urlOf(roles.chat!)]);
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toContain('permission denied for schema auth');
  }, 60_000);
});

describe('infra/docker/Dockerfile', () => {
  const dockerfile = readFileSync(fromRoot('infra/docker/Dockerfile'), 'utf8');
  const instructions = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const stages = new Map<string, string[]>();
  let current = '';
  for (const line of instructions) {
    const from = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (from) {
      current = from[2] ?? from[1]!;
      stages.set(current, [line]);
    } else if (current) {
      stages.get(current)!.push(line);
    }
  }

  it('has one stage per app that sets and exposes the port of its config schema', () => {
    const ports = defaultPorts();
    for (const app of APPS) {
      const stage = stages.get(`app-${app}`);
      expect(stage, `stage app-${app}`).toBeDefined();
      expect(stage).toContain(`ENV PORT=${ports[app]}`);
      expect(stage).toContain(`EXPOSE ${ports[app]}`);
    }
    expect(instructions).toContain('FROM app-${APP} AS final');
  });

  it('builds the bundle from npm ci, and runs it as a non-root user under tini with a health check', () => {
    const build = stages.get('build')!.join('\n');
    expect(build).toMatch(/npm ci /);
    expect(build).toContain('node tools/build/bundle.mjs "${APP}" --out /out');
    const final = stages.get('final')!;
    expect(final).toContain('COPY --from=build /out/${APP} /app');
    const user = final.find((l) => l.startsWith('USER '))!;
    expect(user).toMatch(/^USER [1-9]\d*(:\d+)?$/); // numeric, so Kubernetes can verify runAsNonRoot
    expect(final.some((l) => /^HEALTHCHECK .*CMD .*\/health/.test(l))).toBe(true);
    expect(final).toContain('ENTRYPOINT ["/usr/bin/tini", "--"]');
    expect(final).toContain('CMD ["node", "main.js"]');
    const runtime = stages.get('runtime')!.join('\n');
    expect(runtime).toContain('NODE_ENV=production');
    expect(runtime).toMatch(/apt-get install .*tini/);
  });

  it('copies only paths that exist, and its ignore file keeps node_modules and dist out', () => {
    for (const line of instructions.filter((l) => l.startsWith('COPY ') && !l.includes('--from='))) {
      const sources = line.split(/\s+/).slice(1, -1).filter((s) => !s.startsWith('--'));
      for (const source of sources) expect(existsSync(fromRoot(source)), `${line}: ${source}`).toBe(true);
    }
    const ignore = readFileSync(fromRoot('infra/docker/Dockerfile.dockerignore'), 'utf8').split('\n');
    expect(ignore).toEqual(expect.arrayContaining(['**/node_modules', '**/dist', '.git']));
  });
});
