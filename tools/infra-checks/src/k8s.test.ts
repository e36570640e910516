import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { validateObject } from './k8s-schemas';
import { APPS, SERVICES_WITH_DATABASE, fromRoot, type App } from './paths';
import { defaultPorts, envExampleVariables, findTool, parseYamlDocuments, readYamlDocuments, run } from './support';

// infra/k8s: the sources are validated against bundled schemas of the Kubernetes kinds they use
// (k8s-schemas.ts); every overlay is rendered with `kubectl kustomize` when kubectl is installed
// (.ci/run installs Debian's kubernetes-client where it is missing) and each rendered object is
// validated and checked for the invariants below. Without kubectl, the invariants are checked on
// the base's source files instead (with its ConfigMap literals), and the overlays' patches against
// the schemas only.

type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
};
type Container = {
  name: string;
  image: string;
  command?: string[];
  ports?: Array<{ name?: string; containerPort: number }>;
  env?: Array<{ name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }>;
  envFrom?: Array<{ configMapRef?: { name: string }; secretRef?: { name: string } }>;
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  startupProbe?: { httpGet?: { path: string; port: string | number } };
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  resources?: { requests?: Record<string, string | number>; limits?: Record<string, string | number> };
  securityContext?: {
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    runAsNonRoot?: boolean;
    capabilities?: { drop?: string[] };
  };
  volumeMounts?: Array<{ name: string; mountPath: string }>;
};
type PodSpec = {
  containers: Container[];
  initContainers?: Container[];
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; seccompProfile?: { type: string } };
  automountServiceAccountToken?: boolean;
  enableServiceLinks?: boolean;
  terminationGracePeriodSeconds?: number;
  volumes?: Array<{ name: string; emptyDir?: unknown }>;
};
type Selector = { matchLabels?: Record<string, string> };
type Peer = { podSelector?: Selector; namespaceSelector?: Selector; ipBlock?: { cidr: string } };
type Rule = { from?: Peer[]; to?: Peer[]; ports?: Array<{ port?: number | string; protocol?: string }> };

const K8S = fromRoot('infra/k8s');
const OVERLAYS = ['dev', 'prod'] as const;
// KUBECTL=/path/to/kubectl picks one; KUBECTL=none takes the path of a machine without it.
const KUBECTL = process.env.KUBECTL === 'none' ? undefined : findTool('kubectl', 'KUBECTL');
if (!KUBECTL) {
  console.info('infra-checks: no kubectl, so the overlays are not rendered: checking the sources against the schemas and the base invariants only');
}
const ports = defaultPorts();
const documented = envExampleVariables();

/** Who may reach each app (besides the monitoring namespace), and which ports each may reach. */
const INGRESS_FROM: Record<App, string[]> = {
  gateway: ['namespace:ingress-nginx'],
  auth: ['pod:gateway'],
  chat: ['pod:gateway', 'pod:worker'],
  admin: ['pod:gateway'],
  worker: [],
};
const EGRESS_PORTS: Record<App, number[]> = {
  gateway: [ports.auth, ports.chat, ports.admin, 6379],
  auth: [5432, 6379, 9092, 443],
  chat: [5432, 6379, 9092, 443, 9000],
  admin: [5432, 6379, 9092],
  worker: [ports.chat, 5432, 6379, 9092, 443, 9000],
};
/** A topic has 4 partitions: a consumer group uses at most 4 consumers of it. */
const KAFKA_PARTITIONS = 4;

const yamlFiles = (dir: string): string[] =>
  readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return yamlFiles(full);
    return /\.ya?ml$/.test(name) ? [full] : [];
  });

interface Kustomization {
  namespace?: string;
  bases?: string[];
  resources?: string[];
  patchesStrategicMerge?: string[];
  images?: Array<{ name: string; newName?: string; newTag?: string }>;
  configMapGenerator?: Array<{ name: string; behavior?: string; literals?: string[] }>;
  secretGenerator?: Array<{ name: string; literals?: string[] }>;
}
const kustomization = (dir: string) => readYamlDocuments(path.join(dir, 'kustomization.yaml'))[0] as Kustomization;

/** CPU in millicores or memory in bytes. */
function quantity(value: string | number): number {
  if (typeof value === 'number') return value * 1000;
  const match = /^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(value);
  if (!match) throw new Error(`not a quantity: ${value}`);
  const factor: Record<string, number> = { '': 1000, m: 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4 };
  return Number(match[1]) * factor[match[2] ?? '']!;
}

const byKind = (objects: K8sObject[], kind: string) => objects.filter((o) => o.kind === kind);
const find = (objects: K8sObject[], kind: string, name: string) => objects.find((o) => o.kind === kind && o.metadata.name === name);

/** The data of the ConfigMaps and Secrets a container reads, by variable name. */
function containerEnv(objects: K8sObject[], container: Container, overlay: string | undefined) {
  const env = new Map<string, { from: string; value: string | undefined }>();
  for (const source of container.envFrom ?? []) {
    if (source.configMapRef) {
      const map = find(objects, 'ConfigMap', source.configMapRef.name);
      expect(map, `${container.name}: ConfigMap ${source.configMapRef.name} exists`).toBeDefined();
      for (const [key, value] of Object.entries(map!.data ?? {})) env.set(key, { from: `ConfigMap ${map!.metadata.name}`, value });
    }
    if (source.secretRef) {
      const secret = find(objects, 'Secret', source.secretRef.name);
      if (overlay === 'prod' || !secret) {
        // Made by the operator in the namespace (docs/operations.md lists the keys).
        expect(source.secretRef.name, container.name).toBe(`vivier-${container.name}-secrets`);
        expect(overlay === 'dev', `${container.name}: the dev overlay generates ${source.secretRef.name}`).toBe(false);
        continue;
      }
      const data = {
        ...Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v.replace(/\s/g, ''), 'base64').toString()])),
        ...secret.stringData,
      };
      for (const [key, value] of Object.entries(data)) env.set(key, { from: `Secret ${secret.metadata.name}`, value });
    }
  }
  for (const variable of container.env ?? []) env.set(variable.name, { from: 'env', value: variable.value });
  return env;
}

/** Everything one rendered overlay (or the base's sources) must satisfy. */
function checkInvariants(objects: K8sObject[], overlay: string | undefined) {
  const deployments = byKind(objects, 'Deployment');
  expect(deployments.map((d) => d.metadata.name).sort()).toEqual([...APPS].sort());
  const images = new Set<string>();
  const providerMasterKeys = new Set<string>();

  for (const app of APPS) {
    const deployment = find(objects, 'Deployment', app)!;
    const spec = deployment.spec as { replicas?: number; selector: Selector; template: { metadata: { labels: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec } };
    const pod = spec.template.spec;
    const podLabels = spec.template.metadata.labels;
    expect(spec.replicas, `${app}: the HPA owns replicas`).toBeUndefined();
    for (const [k, v] of Object.entries(spec.selector.matchLabels ?? {})) expect(podLabels[k], `${app} selector ${k}`).toBe(v);

    // Pod: non-root, no API token, no service-link variables, graceful termination.
    expect(pod.securityContext?.runAsNonRoot, app).toBe(true);
    expect(pod.securityContext?.runAsUser, app).toBeGreaterThan(0);
    expect(pod.securityContext?.seccompProfile?.type, app).toBe('RuntimeDefault');
    expect(pod.automountServiceAccountToken, app).toBe(false);
    expect(pod.enableServiceLinks, app).toBe(false);

    const container = pod.containers.find((c) => c.name === app)!;
    expect(container, `${app}: container named ${app}`).toBeDefined();
    expect(container.image, app).toMatch(new RegExp(`^([\\w.-]+(:\\d+)?/)*vivier-${app}(:[\\w.-]+|@sha256:[a-f0-9]{64})$`));
    images.add(container.image.replace(/.*\/vivier-[a-z]+/, 'vivier-*'));
    const port = container.ports?.find((p) => p.name === 'http');
    expect(port?.containerPort, `${app}: http port`).toBe(ports[app]);
    expect(container.env?.find((e) => e.name === 'PORT')?.value, `${app}: PORT`).toBe(String(ports[app]));
    expect(spec.template.metadata.annotations?.['prometheus.io/port'], app).toBe(String(ports[app]));
    expect(spec.template.metadata.annotations?.['prometheus.io/scrape'], app).toBe('true');

    // Probes: alive on /health, ready on /ready, a startup probe before either counts.
    expect(container.livenessProbe?.httpGet?.path, `${app} liveness`).toBe('/health');
    expect(container.readinessProbe?.httpGet?.path, `${app} readiness`).toBe('/ready');
    expect(container.startupProbe?.httpGet?.path, `${app} startup`).toBe('/health');
    for (const probe of [container.livenessProbe, container.readinessProbe, container.startupProbe]) {
      expect([port!.name, port!.containerPort], app).toContain(probe!.httpGet!.port);
    }

    const env = containerEnv(objects, container, overlay);
    for (const [name, { from }] of env) expect(documented.has(name), `${app} reads ${name} (${from}), undocumented in .env.example`).toBe(true);
    const drain = Number(env.get('SHUTDOWN_TIMEOUT_MS')?.value ?? 10_000) + Number(env.get('SHUTDOWN_GRACE_MS')?.value ?? 5000);
    const preStop = container.lifecycle?.preStop?.exec?.command;
    expect(preStop?.[0], `${app}: preStop sleep`).toBe('sleep');
    const sleepMs = Number(preStop![1]) * 1000;
    expect((pod.terminationGracePeriodSeconds ?? 30) * 1000, `${app}: grace > preStop + SHUTDOWN_GRACE_MS + drain`).toBeGreaterThan(sleepMs + drain);
    expect(env.get('NODE_ENV')?.value, app).toBe('production');
    expect(env.get('HOST')?.value, app).toBe('0.0.0.0');
    for (const key of ['INTERNAL_IDENTITY_SECRET', 'REDIS_URL', ...((SERVICES_WITH_DATABASE as readonly string[]).includes(app) ? ['DATABASE_URL'] : [])]) {
      if (overlay !== 'prod' && env.has(key)) expect(env.get(key)!.from, `${app}: ${key} from a Secret`).toMatch(/^Secret /);
      if (overlay === 'dev') expect(env.has(key), `${app}: dev Secret has ${key}`).toBe(true);
    }
    if (overlay === 'dev') {
      if (app === 'auth') expect(env.get('AUTH_KEY_ENCRYPTION_KEY')?.value).toMatch(/^[A-Za-z0-9+/]{43}=$/);
      // Admin encrypts provider keys onto provider.configured; chat and the worker open them: one master key.
      if (app === 'admin' || app === 'chat' || app === 'worker') {
        expect(env.get('PROVIDER_KEY_ENCRYPTION_KEY')?.value, app).toMatch(/^[A-Za-z0-9+/]{43}=$/);
        providerMasterKeys.add(env.get('PROVIDER_KEY_ENCRYPTION_KEY')!.value!);
      }
      expect(env.get('INTERNAL_IDENTITY_SECRET')!.value!.length, app).toBeGreaterThanOrEqual(32);
      if (env.has('DATABASE_URL')) expect(new URL(env.get('DATABASE_URL')!.value!).username).toBe(`${app}_svc`);
    }

    // Every container (and the migration before it): resources, read-only, unprivileged.
    for (const c of [...pod.containers, ...(pod.initContainers ?? [])]) {
      const where = `${app}/${c.name}`;
      for (const resource of ['cpu', 'memory']) {
        const request = c.resources?.requests?.[resource];
        const limit = c.resources?.limits?.[resource];
        expect(request, `${where}: ${resource} request`).toBeDefined();
        expect(limit, `${where}: ${resource} limit`).toBeDefined();
        expect(quantity(limit!), `${where}: ${resource} limit ≥ request`).toBeGreaterThanOrEqual(quantity(request!));
      }
      expect(c.securityContext?.readOnlyRootFilesystem, where).toBe(true);
      expect(c.securityContext?.allowPrivilegeEscalation, where).toBe(false);
      expect(c.securityContext?.runAsNonRoot, where).toBe(true);
      expect(c.securityContext?.capabilities?.drop, where).toContain('ALL');
    }
    // A read-only root: /tmp is an emptyDir.
    const tmp = container.volumeMounts?.find((m) => m.mountPath === '/tmp');
    expect(pod.volumes?.find((v) => v.name === tmp?.name)?.emptyDir, `${app}: /tmp`).toBeDefined();

    // Migrations: an init container of the same image, as the service's own role.
    if ((SERVICES_WITH_DATABASE as readonly string[]).includes(app)) {
      const migrate = pod.initContainers?.find((c) => c.name === 'migrate');
      expect(migrate?.image, `${app}: migrate init container, same image`).toBe(container.image);
      expect(migrate?.command).toEqual(['node', 'migrate.js']);
      const url = migrate?.env?.find((e) => e.name === 'DATABASE_URL')?.valueFrom?.secretKeyRef;
      expect(url?.key).toBe('DATABASE_URL');
      expect(container.envFrom?.some((s) => s.secretRef?.name === url?.name), `${app}: migrate reads the service's Secret`).toBe(true);
    } else {
      expect(pod.initContainers ?? []).toEqual([]);
    }

    // Service on the app's port, selecting exactly its pods.
    const service = find(objects, 'Service', app);
    expect(service, `${app}: Service`).toBeDefined();
    const serviceSpec = service!.spec as { selector: Record<string, string>; ports: Array<{ name?: string; port: number; targetPort?: string | number }> };
    for (const [k, v] of Object.entries(serviceSpec.selector)) expect(podLabels[k], `${app} Service selector ${k}`).toBe(v);
    expect(serviceSpec.ports[0]!.port, `${app}: Service port`).toBe(ports[app]);
    expect([port!.name, port!.containerPort]).toContain(serviceSpec.ports[0]!.targetPort);

    // HPA on CPU; PDB that a drain can satisfy.
    const hpa = find(objects, 'HorizontalPodAutoscaler', app);
    expect(hpa, `${app}: HPA`).toBeDefined();
    const hpaSpec = hpa!.spec as { scaleTargetRef: { kind: string; name: string }; minReplicas: number; maxReplicas: number; metrics: Array<{ resource?: { name: string } }> };
    expect(hpa!.apiVersion).toBe('autoscaling/v2');
    expect(hpaSpec.scaleTargetRef).toMatchObject({ kind: 'Deployment', name: app });
    expect(hpaSpec.minReplicas, app).toBeLessThanOrEqual(hpaSpec.maxReplicas);
    expect(hpaSpec.metrics.some((m) => m.resource?.name === 'cpu'), `${app}: scales on CPU`).toBe(true);
    if (app === 'worker' || app === 'admin') expect(hpaSpec.maxReplicas, `${app}: Kafka consumers beyond the partitions idle`).toBeLessThanOrEqual(KAFKA_PARTITIONS);
    const pdb = find(objects, 'PodDisruptionBudget', app);
    expect(pdb, `${app}: PDB`).toBeDefined();
    expect(pdb!.apiVersion).toBe('policy/v1');
    const pdbSpec = pdb!.spec as { minAvailable?: number; maxUnavailable?: number; selector: Selector };
    expect((pdbSpec.minAvailable === undefined) !== (pdbSpec.maxUnavailable === undefined), `${app}: exactly one of minAvailable / maxUnavailable`).toBe(true);
    if (pdbSpec.minAvailable !== undefined) expect(pdbSpec.minAvailable, `${app}: a drain must stay possible`).toBeLessThan(hpaSpec.minReplicas);
    for (const [k, v] of Object.entries(pdbSpec.selector.matchLabels ?? {})) expect(podLabels[k], `${app} PDB selector`).toBe(v);

    if (overlay === 'dev') expect([hpaSpec.minReplicas, hpaSpec.maxReplicas], `${app}: dev runs one pod`).toEqual([1, 1]);
    if (overlay === 'prod') {
      expect(hpaSpec.minReplicas, `${app}: prod keeps ≥ 2 pods`).toBeGreaterThanOrEqual(2);
      expect(pdbSpec.minAvailable, `${app}: prod PDB minAvailable`).toBeGreaterThanOrEqual(1);
    }
  }
  expect(images.size, `one image tag for every app: ${[...images].join(', ')}`).toBe(1);
  if (overlay === 'dev') expect(providerMasterKeys.size, 'admin, chat and worker share PROVIDER_KEY_ENCRYPTION_KEY').toBe(1);

  // The gateway reaches the services at their Service names and ports.
  const gatewayEnv = containerEnv(objects, (find(objects, 'Deployment', 'gateway')!.spec as { template: { spec: PodSpec } }).template.spec.containers[0]!, overlay);
  for (const [variable, app] of [['AUTH_URL', 'auth'], ['CHAT_URL', 'chat'], ['ADMIN_URL', 'admin']] as const) {
    const url = new URL(gatewayEnv.get(variable)!.value!);
    expect(url.hostname, variable).toBe(app);
    expect(Number(url.port), variable).toBe(ports[app]);
  }
  // So does the worker reach chat (exports); without it, it called its own pod.
  const workerEnv = containerEnv(objects, (find(objects, 'Deployment', 'worker')!.spec as { template: { spec: PodSpec } }).template.spec.containers[0]!, overlay);
  const chatUrl = new URL(workerEnv.get('CHAT_URL')?.value ?? 'http://unset');
  expect([chatUrl.hostname, Number(chatUrl.port)], 'worker CHAT_URL').toEqual(['chat', ports.chat]);

  checkNetworkPolicies(objects);

  // Overlays: everything in their namespace; the Ingress routes the API to the gateway only.
  if (overlay) {
    const namespace = kustomization(path.join(K8S, 'overlays', overlay)).namespace;
    for (const object of objects.filter((o) => o.kind !== 'Namespace')) {
      expect(object.metadata.namespace, `${object.kind} ${object.metadata.name}`).toBe(namespace);
    }
    const ingresses = byKind(objects, 'Ingress');
    expect(ingresses.length, `${overlay}: an Ingress`).toBeGreaterThan(0);
    for (const ingress of ingresses) {
      const rules = (ingress.spec as { rules: Array<{ http: { paths: Array<{ path: string; backend: { service: { name: string; port: { name?: string; number?: number } } } }> } }> }).rules;
      for (const { path: route, backend } of rules.flatMap((r) => r.http.paths)) {
        expect(backend.service.name, route).toBe('gateway');
        expect(backend.service.port.name ?? backend.service.port.number, route).toSatisfy((p: unknown) => p === 'http' || p === ports.gateway);
        expect(['/', '/metrics', '/health', '/ready'], `${route}: not public`).not.toContain(route);
      }
    }
  }
}

function checkNetworkPolicies(objects: K8sObject[]) {
  const policies = byKind(objects, 'NetworkPolicy');
  const deny = policies.find((p) => {
    const spec = p.spec as { podSelector: Selector; policyTypes?: string[]; ingress?: Rule[]; egress?: Rule[] };
    return Object.keys(spec.podSelector.matchLabels ?? {}).length === 0 && !spec.ingress && !spec.egress && spec.policyTypes?.includes('Ingress') && spec.policyTypes.includes('Egress');
  });
  expect(deny, 'a default-deny NetworkPolicy (ingress and egress) for every pod').toBeDefined();

  for (const policy of policies) {
    const spec = policy.spec as { ingress?: Rule[]; egress?: Rule[] };
    for (const rule of spec.ingress ?? []) {
      expect(rule.from?.length, `${policy.metadata.name}: an ingress rule without "from" admits everyone`).toBeGreaterThan(0);
      expect(rule.ports?.length, `${policy.metadata.name}: ingress rules name ports`).toBeGreaterThan(0);
      for (const peer of rule.from!) expect(peer.ipBlock, `${policy.metadata.name}: ingress by ipBlock`).toBeUndefined();
    }
    for (const rule of spec.egress ?? []) expect(rule.ports?.length, `${policy.metadata.name}: egress rules name ports`).toBeGreaterThan(0);
  }

  for (const app of APPS) {
    const selecting = policies.filter((p) => (p.spec as { podSelector: Selector }).podSelector.matchLabels?.['app.kubernetes.io/name'] === app);
    expect(selecting.length, `${app}: a NetworkPolicy`).toBeGreaterThan(0);
    const rules = selecting.flatMap((p) => (p.spec as { ingress?: Rule[] }).ingress ?? []);
    const sources = new Set<string>();
    for (const rule of rules) {
      for (const peer of rule.from ?? []) {
        const namespace = peer.namespaceSelector?.matchLabels?.['kubernetes.io/metadata.name'];
        const pod = peer.podSelector?.matchLabels?.['app.kubernetes.io/name'];
        expect(namespace ?? pod, `${app}: peer names a namespace or an app`).toBeDefined();
        if (namespace) expect(peer.podSelector, `${app}: namespace peer`).toBeUndefined();
        sources.add(namespace ? `namespace:${namespace}` : `pod:${pod}`);
      }
      for (const p of rule.ports ?? []) expect(p.port, `${app}: ingress only on its port`).toBe(ports[app]);
    }
    expect([...sources].sort(), `${app}: who may connect`).toEqual([...INGRESS_FROM[app], 'namespace:monitoring'].sort());

    const egressPorts = new Set(
      selecting.flatMap((p) => ((p.spec as { egress?: Rule[] }).egress ?? []).flatMap((r) => (r.ports ?? []).map((x) => Number(x.port)))),
    );
    expect([...egressPorts].sort(), `${app}: egress ports`).toEqual([...EGRESS_PORTS[app]].sort());
  }
  // DNS for everyone, to the cluster's resolver only.
  const dns = policies.filter((p) => {
    const spec = p.spec as { podSelector: Selector; egress?: Rule[] };
    return Object.keys(spec.podSelector.matchLabels ?? {}).length === 0 && spec.egress?.some((r) => r.ports?.some((x) => Number(x.port) === 53));
  });
  expect(dns.length, 'DNS egress for every pod').toBe(1);
  for (const rule of (dns[0]!.spec as { egress: Rule[] }).egress) expect(rule.to?.length, 'DNS only to the resolver').toBeGreaterThan(0);
}

/** The base's resources as kustomize would emit them, minus the generators' hash suffixes. */
function baseSources(): K8sObject[] {
  const base = path.join(K8S, 'base');
  const k = kustomization(base);
  const objects = (k.resources ?? []).flatMap((file) => readYamlDocuments(path.join(base, file))) as K8sObject[];
  for (const generator of k.configMapGenerator ?? []) {
    objects.push({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: generator.name },
      data: Object.fromEntries((generator.literals ?? []).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)])),
    });
  }
  return objects;
}

describe('infra/k8s sources', () => {
  it('parse, and every kustomization names files that exist, with kustomize v2 fields only', () => {
    const dirs = [path.join(K8S, 'base'), ...OVERLAYS.map((o) => path.join(K8S, 'overlays', o))];
    for (const dir of dirs) {
      const k = kustomization(dir);
      expect(validateObject(k)).toEqual([]);
      for (const entry of [...(k.bases ?? []), ...(k.resources ?? []), ...(k.patchesStrategicMerge ?? [])]) {
        expect(existsSync(path.resolve(dir, entry)), `${path.relative(K8S, dir)}: ${entry}`).toBe(true);
      }
    }
    for (const file of yamlFiles(K8S)) expect(() => readYamlDocuments(file), file).not.toThrow();
  });

  it('validates every resource against the schemas, and every patch as a partial object', () => {
    const problems: string[] = [];
    for (const dir of [path.join(K8S, 'base'), ...OVERLAYS.map((o) => path.join(K8S, 'overlays', o))]) {
      const k = kustomization(dir);
      for (const file of k.resources ?? []) {
        for (const object of readYamlDocuments(path.join(dir, file))) problems.push(...validateObject(object).map((p) => `${file}: ${p}`));
      }
      for (const file of k.patchesStrategicMerge ?? []) {
        for (const object of readYamlDocuments(path.join(dir, file))) problems.push(...validateObject(object, { partial: true }).map((p) => `${file}: ${p}`));
      }
    }
    expect(problems).toEqual([]);
  });

  it('the schemas catch what they should', () => {
    const deployment = readYamlDocuments(path.join(K8S, 'base', 'auth.yaml'))[0] as { spec: { template: { spec: { containers: Array<Record<string, unknown>> } } } };
    const broken = structuredClone(deployment);
    broken.spec.template.spec.containers[0]!.readinesProbe = broken.spec.template.spec.containers[0]!.readinessProbe;
    (broken.spec.template.spec.containers[0]!.ports as Array<{ containerPort: unknown }>)[0]!.containerPort = '8081';
    const problems = validateObject(broken);
    expect(problems.join('\n')).toContain('readinesProbe: unknown field');
    expect(problems.join('\n')).toContain('containerPort: expected integer');
  });

  it('base sources satisfy the invariants (with the base ConfigMap literals)', () => {
    checkInvariants(baseSources(), undefined);
  });
});

describe.runIf(KUBECTL)('infra/k8s rendered with kubectl kustomize', () => {
  const render = async (dir: string) => {
    const result = await run(KUBECTL!, ['kustomize', dir], { timeoutMs: 60_000 });
    expect(result.code, result.stderr).toBe(0);
    return parseYamlDocuments(result.stdout) as K8sObject[];
  };

  it('renders the base: valid objects, invariants hold', async () => {
    const objects = await render(path.join(K8S, 'base'));
    expect(objects.flatMap((o) => validateObject(o))).toEqual([]);
    checkInvariants(objects, undefined);
  });

  for (const overlay of OVERLAYS) {
    it(`renders overlays/${overlay}: valid objects, invariants hold`, async () => {
      const objects = await render(path.join(K8S, 'overlays', overlay));
      expect(objects.flatMap((o) => validateObject(o))).toEqual([]);
      checkInvariants(objects, overlay);
      const kinds = new Set(objects.map((o) => o.kind));
      for (const kind of ['Deployment', 'Service', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'NetworkPolicy', 'ConfigMap', 'Ingress']) expect(kinds).toContain(kind);
      if (overlay === 'dev') expect(byKind(objects, 'Secret').map((s) => s.metadata.name.replace(/-[a-z0-9]{10}$/, '')).sort()).toEqual(APPS.map((a) => `vivier-${a}-secrets`).sort());
      if (overlay === 'prod') expect(byKind(objects, 'Secret'), 'prod Secrets are not in the repository').toEqual([]);
    });
  }

  it('prod gives every service at least the resources of dev', async () => {
    const [dev, prod] = await Promise.all(OVERLAYS.map((o) => render(path.join(K8S, 'overlays', o))));
    for (const app of APPS) {
      const requests = (objects: K8sObject[]) =>
        (find(objects, 'Deployment', app)!.spec as { template: { spec: PodSpec } }).template.spec.containers[0]!.resources!.requests!;
      for (const resource of ['cpu', 'memory']) {
        expect(quantity(requests(prod!)[resource]!), `${app} ${resource}`).toBeGreaterThanOrEqual(quantity(requests(dev!)[resource]!));
      }
    }
  });
});
