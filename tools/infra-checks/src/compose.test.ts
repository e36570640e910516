import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { APPS, SERVICES_WITH_DATABASE, fromRoot, type App } from './paths';
import { defaultPorts, documentedVariables, durationMs, envExampleVariables, readYaml } from './support';

// docker-compose.yml cannot run here (no Docker engine): this proves that everything it names
// exists and fits together, the way `docker compose config` and a first `up` would.

interface Healthcheck {
  test: string[] | string;
  interval?: string;
  timeout?: string;
  retries?: number;
  start_period?: string;
}
interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile?: string; args?: Record<string, string> };
  command?: string[] | string;
  environment?: Record<string, string | number | boolean | null>;
  depends_on?: Record<string, { condition: string }> | string[];
  healthcheck?: Healthcheck;
  ports?: string[];
  volumes?: string[];
  restart?: string;
  profiles?: string[];
  stop_grace_period?: string;
  read_only?: boolean;
}
interface Compose {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

const COMPOSE_FILE = fromRoot('docker-compose.yml');
const compose = readYaml<Compose>(COMPOSE_FILE);
const raw = readFileSync(COMPOSE_FILE, 'utf8');
const services = compose.services;
const names = Object.keys(services);
const appOf = (name: string): App | undefined => services[name]!.build?.args?.APP as App | undefined;
const appServices = APPS.map((app) => app as string);
const migrateServices = SERVICES_WITH_DATABASE.map((s) => `migrate-${s}`);
/** A value as compose resolves it without an .env: `${VAR:-default}` → default, `${VAR:?msg}` → undefined. */
const defaultOf = (value: unknown): string | undefined => {
  const text = String(value);
  const match = /^\$\{[A-Z0-9_]+(?::?-([^}]*)|:?\?[^}]*)?\}$/.exec(text);
  if (!match) return text;
  return match[1];
};
const envOf = (name: string) => services[name]!.environment ?? {};
const dependsOf = (name: string): Record<string, { condition: string }> => {
  const deps = services[name]!.depends_on ?? {};
  return Array.isArray(deps) ? Object.fromEntries(deps.map((d) => [d, { condition: 'service_started' }])) : deps;
};

describe('docker-compose.yml', () => {
  it('defines the five services, their migrations, the dependencies and the one-shot setup', () => {
    expect(names).toEqual(
      expect.arrayContaining([
        ...appServices,
        ...migrateServices,
        'postgres',
        'redis',
        'kafka',
        'minio',
        'provision',
        'kafka-topics',
        'minio-init',
      ]),
    );
    expect(services.postgres!.image).toMatch(/^postgres:15(\.|$)/);
    expect(services.redis!.image).toMatch(/^redis:7(\.|$)/);
    expect(services.kafka!.image).toMatch(/^apache\/kafka:\d/);
    expect(services.kafka!.environment).toMatchObject({ KAFKA_PROCESS_ROLES: 'broker,controller' }); // KRaft, no ZooKeeper
  });

  it('builds every image it names from this repository, one app per image', () => {
    for (const name of names) {
      const service = services[name]!;
      expect(service.image ?? service.build, `${name}: image or build`).toBeDefined();
      if (service.build) {
        const context = path.resolve(path.dirname(COMPOSE_FILE), service.build.context);
        expect(existsSync(context) && statSync(context).isDirectory(), `${name}: build context`).toBe(true);
        expect(existsSync(path.join(context, service.build.dockerfile ?? 'Dockerfile')), `${name}: dockerfile`).toBe(true);
        const app = service.build.args?.APP;
        expect(APPS, `${name}: build arg APP`).toContain(app);
        // The tag compose gives the image says which app it is.
        expect(service.image, name).toMatch(new RegExp(`-${app}:\\$\\{VIVIER_VERSION:-[\\w.-]+\\}$`));
      } else {
        // Third-party images are pinned: no floating latest.
        expect(service.image, name).toMatch(/^[\w./-]+:[\w.-]+$/);
        expect(service.image!.endsWith(':latest'), `${name}: pin the image`).toBe(false);
      }
    }
    for (const app of APPS) expect(appOf(app)).toBe(app);
    for (const service of SERVICES_WITH_DATABASE) expect(appOf(`migrate-${service}`)).toBe(service);
  });

  it('orders start-up with depends_on conditions that can be met, without cycles', () => {
    const valid = ['service_started', 'service_healthy', 'service_completed_successfully'];
    for (const name of names) {
      for (const [dependency, { condition }] of Object.entries(dependsOf(name))) {
        expect(names, `${name} depends on ${dependency}`).toContain(dependency);
        expect(valid, `${name} → ${dependency}`).toContain(condition);
        if (condition === 'service_healthy') expect(services[dependency]!.healthcheck, `${dependency} has a healthcheck`).toBeDefined();
        if (condition === 'service_completed_successfully') expect(services[dependency]!.restart, `${dependency} is one-shot`).toBe('no');
        // A service outside a profile never waits for one inside it (it would never start).
        if (!services[name]!.profiles) expect(services[dependency]!.profiles, `${name} → ${dependency}`).toBeUndefined();
      }
    }
    const visiting = new Set<string>();
    const done = new Set<string>();
    const visit = (name: string, trail: string[]) => {
      if (done.has(name)) return;
      expect(visiting.has(name), `cycle: ${[...trail, name].join(' → ')}`).toBe(false);
      visiting.add(name);
      for (const dependency of Object.keys(dependsOf(name))) visit(dependency, [...trail, name]);
      visiting.delete(name);
      done.add(name);
    };
    for (const name of names) visit(name, []);

    // Every app waits for its migrations; the migrations wait for provisioning; consumers for the topics.
    for (const service of SERVICES_WITH_DATABASE) {
      expect(dependsOf(service)[`migrate-${service}`]?.condition).toBe('service_completed_successfully');
      expect(dependsOf(service)['kafka-topics']?.condition).toBe('service_completed_successfully');
      expect(dependsOf(`migrate-${service}`).provision?.condition).toBe('service_completed_successfully');
    }
    for (const app of ['auth', 'chat', 'admin']) expect(dependsOf('gateway')[app]?.condition).toBe('service_healthy');
    for (const app of ['chat', 'worker']) expect(dependsOf(app)['minio-init']?.condition).toBe('service_completed_successfully');
  });

  it('has well-formed healthchecks, and one on every long-running service', () => {
    for (const name of names) {
      const check = services[name]!.healthcheck;
      if (services[name]!.restart !== 'no') expect(check, `${name} healthcheck`).toBeDefined();
      if (!check) continue;
      expect(Array.isArray(check.test), `${name}: test as a list`).toBe(true);
      const [kind, ...rest] = check.test as string[];
      expect(['CMD', 'CMD-SHELL'], name).toContain(kind);
      expect(rest.length, name).toBeGreaterThan(0);
      if (kind === 'CMD-SHELL') expect(rest).toHaveLength(1);
      for (const key of ['interval', 'timeout', 'start_period'] as const) {
        if (check[key] !== undefined) expect(durationMs(check[key]!), `${name}.${key}`).toBeGreaterThan(0);
      }
      if (check.retries !== undefined) expect(Number.isInteger(check.retries) && check.retries > 0, `${name}.retries`).toBe(true);
      if (check.timeout && check.interval) expect(durationMs(check.timeout)).toBeLessThanOrEqual(durationMs(check.interval));
    }
    // The apps' check asks their own /health on their PORT.
    for (const app of APPS) expect(JSON.stringify(services[app]!.healthcheck!.test)).toContain("process.env.PORT+'/health'");
  });

  it('gives the services only documented variables, and documents every variable it interpolates', () => {
    const documented = envExampleVariables();
    for (const name of [...appServices, ...migrateServices]) {
      for (const variable of Object.keys(envOf(name))) {
        expect(documented.has(variable), `${name} receives ${variable}, which .env.example does not document`).toBe(true);
      }
    }
    const composeOnly = documentedVariables(fromRoot('infra/docker/compose.env.example'));
    const interpolated = new Set([...raw.matchAll(/(?<!\$)\$\{([A-Z][A-Z0-9_]*)/g)].map((m) => m[1]!));
    for (const variable of interpolated) {
      expect(documented.has(variable) || composeOnly.has(variable), `\${${variable}} is documented nowhere`).toBe(true);
    }
    for (const variable of composeOnly) {
      expect(interpolated.has(variable), `infra/docker/compose.env.example documents ${variable}, unused`).toBe(true);
      expect(documented.has(variable), `${variable} is in both .env.example and compose.env.example`).toBe(false);
    }
    // Secrets have no default: compose stops when one is unset.
    for (const secret of ['INTERNAL_IDENTITY_SECRET', 'AUTH_KEY_ENCRYPTION_KEY', 'PROVIDER_KEY_ENCRYPTION_KEY', 'POSTGRES_PASSWORD', 'AWS_SECRET_ACCESS_KEY']) {
      expect(raw).toMatch(new RegExp(`\\$\\{${secret}:\\?`));
      expect(raw).not.toMatch(new RegExp(`\\$\\{${secret}:-`));
    }
  });

  it('publishes only the gateway (and the opt-in monitoring UIs), each host port once', () => {
    const published = names.flatMap((name) =>
      (services[name]!.ports ?? []).map((spec) => {
        const parts = String(spec).split(':');
        const host = defaultOf(parts.length === 3 ? parts[1] : parts[0]) ?? '';
        return { name, host: `${parts.length === 3 ? parts[0] : '0.0.0.0'}:${host}` };
      }),
    );
    expect(new Set(published.map((p) => p.host)).size).toBe(published.length);
    const publishers = new Set(published.map((p) => p.name));
    for (const name of publishers) expect(name === 'gateway' || services[name]!.profiles !== undefined, `${name} publishes a port`).toBe(true);
    expect(publishers.has('gateway')).toBe(true);
  });

  it('runs each app on its own port, the one the gateway calls it on', () => {
    const ports = defaultPorts();
    for (const app of APPS) expect(Number(envOf(app).PORT), `${app} PORT`).toBe(ports[app]);
    const gateway = envOf('gateway');
    for (const [variable, app] of [['AUTH_URL', 'auth'], ['CHAT_URL', 'chat'], ['ADMIN_URL', 'admin']] as const) {
      const url = new URL(String(gateway[variable]));
      expect(url.hostname, variable).toBe(app);
      expect(Number(url.port), variable).toBe(Number(envOf(app).PORT));
    }
  });

  it('connects every service and its migration as the role provision.sql creates', () => {
    for (const service of SERVICES_WITH_DATABASE) {
      for (const name of [service, `migrate-${service}`]) {
        const url = String(envOf(name).DATABASE_URL).replace(/\$\{[^}]*\}/g, 'x');
        expect(new URL(url).username, name).toBe(`${service}_svc`);
        expect(new URL(url).hostname, name).toBe('postgres');
      }
      expect(services[`migrate-${service}`]!.command).toEqual(['node', 'migrate.js']);
    }
    const provision = JSON.stringify(services.provision!.command);
    for (const service of SERVICES_WITH_DATABASE) expect(provision).toContain(`-v ${service}_password=`);
    expect(services.provision!.volumes).toContain('./infra/postgres/provision.sql:/provision/provision.sql:ro');
    expect(services['kafka-topics']!.volumes).toContain('./infra/kafka/topics.txt:/topics/topics.txt:ro');
  });

  it('lets in-flight requests drain before the stop timeout, read-only and unprivileged', () => {
    for (const app of APPS) {
      const service = services[app]!;
      const ms = (value: unknown, fallback: number) => (value === undefined ? fallback : Number(defaultOf(value) ?? fallback));
      const drain = ms(envOf(app).SHUTDOWN_TIMEOUT_MS, 10_000) + ms(envOf(app).SHUTDOWN_GRACE_MS, 5000);
      expect(durationMs(service.stop_grace_period ?? '10s'), `${app}: stop_grace_period > SHUTDOWN_GRACE_MS + SHUTDOWN_TIMEOUT_MS`).toBeGreaterThan(drain);
      expect(service.read_only, app).toBe(true);
      expect(envOf(app).NODE_ENV).toBe('production');
      expect(envOf(app).HOST).toBe('0.0.0.0');
    }
  });

  it('mounts files that exist and declares its named volumes', () => {
    const declared = Object.keys(compose.volumes ?? {});
    for (const name of names) {
      for (const volume of services[name]!.volumes ?? []) {
        const source = volume.split(':')[0]!;
        if (source.startsWith('.')) expect(existsSync(path.resolve(path.dirname(COMPOSE_FILE), source)), `${name}: ${source}`).toBe(true);
        else expect(declared, `${name}: volume ${source}`).toContain(source);
      }
    }
  });
});
