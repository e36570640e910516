/**
 * Offline JSON Schemas of the Kubernetes kinds infra/k8s uses, cut down from the Kubernetes
 * OpenAPI definitions (v1.30) to the fields Vivier sets and their neighbours: required fields,
 * types, enums, and `additionalProperties: false` on the structural objects, so that a misspelt
 * or misplaced field (`readinesProbe`, `resources` at pod level) fails instead of being dropped
 * by the API server in silence. A field these schemas lack but Kubernetes has: add it here.
 *
 * `validate` implements the JSON Schema subset used below (type, required, properties,
 * additionalProperties, items, enum, const, pattern, minimum, maximum, minItems, anyOf, $ref).
 */

export interface JsonSchema {
  $ref?: string;
  type?: string | string[];
  required?: string[];
  properties?: Record<string, JsonSchema>;
  additionalProperties?: boolean | JsonSchema;
  items?: JsonSchema;
  enum?: unknown[];
  const?: unknown;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  minItems?: number;
  anyOf?: JsonSchema[];
  description?: string;
}

const ref = (name: string): JsonSchema => ({ $ref: `#/definitions/${name}` });
const str: JsonSchema = { type: 'string' };
const bool: JsonSchema = { type: 'boolean' };
const int = (minimum?: number, maximum?: number): JsonSchema => ({
  type: 'integer',
  ...(minimum === undefined ? {} : { minimum }),
  ...(maximum === undefined ? {} : { maximum }),
});
const arrayOf = (items: JsonSchema, minItems?: number): JsonSchema => ({ type: 'array', items, ...(minItems ? { minItems } : {}) });
const mapOf = (values: JsonSchema): JsonSchema => ({ type: 'object', additionalProperties: values });
const object = (properties: Record<string, JsonSchema>, required: string[] = [], closed = true): JsonSchema => ({
  type: 'object',
  properties,
  required,
  additionalProperties: !closed,
});
const intOrString: JsonSchema = { anyOf: [{ type: 'integer' }, { type: 'string', pattern: '^([0-9]+%|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$' }] };
const quantity: JsonSchema = {
  anyOf: [{ type: 'number' }, { type: 'string', pattern: '^[0-9]+(\\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$' }],
};
const dnsLabel = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';
const dnsSubdomain = '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$';
const labels = mapOf({ type: 'string', pattern: '^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$' });

const definitions: Record<string, JsonSchema> = {
  ObjectMeta: object(
    {
      name: { type: 'string', pattern: dnsSubdomain },
      namespace: { type: 'string', pattern: dnsLabel },
      labels,
      annotations: mapOf(str),
    },
    ['name'],
  ),
  TemplateMeta: object({ labels, annotations: mapOf(str) }),
  LabelSelector: object({
    matchLabels: labels,
    matchExpressions: arrayOf(
      object({ key: str, operator: { enum: ['In', 'NotIn', 'Exists', 'DoesNotExist'] }, values: arrayOf(str) }, ['key', 'operator']),
    ),
  }),
  EnvVar: object(
    {
      name: { type: 'string', pattern: '^[-._a-zA-Z][-._a-zA-Z0-9]*$' },
      value: str,
      valueFrom: object({
        secretKeyRef: object({ name: str, key: str, optional: bool }, ['key']),
        configMapKeyRef: object({ name: str, key: str, optional: bool }, ['key']),
        fieldRef: object({ fieldPath: str, apiVersion: str }, ['fieldPath']),
        resourceFieldRef: object({ resource: str, containerName: str, divisor: quantity }, ['resource']),
      }),
    },
    ['name'],
  ),
  EnvFromSource: object({
    prefix: str,
    configMapRef: object({ name: str, optional: bool }, ['name']),
    secretRef: object({ name: str, optional: bool }, ['name']),
  }),
  Probe: object({
    httpGet: object(
      { path: str, port: intOrString, host: str, scheme: { enum: ['HTTP', 'HTTPS'] }, httpHeaders: arrayOf(object({ name: str, value: str }, ['name', 'value'])) },
      ['port'],
    ),
    tcpSocket: object({ port: intOrString, host: str }, ['port']),
    exec: object({ command: arrayOf(str) }),
    grpc: object({ port: int(1, 65535), service: str }, ['port']),
    initialDelaySeconds: int(0),
    periodSeconds: int(1),
    timeoutSeconds: int(1),
    successThreshold: int(1),
    failureThreshold: int(1),
    terminationGracePeriodSeconds: int(1),
  }),
  LifecycleHandler: object({
    exec: object({ command: arrayOf(str, 1) }),
    httpGet: object({ path: str, port: intOrString, host: str, scheme: str }, ['port']),
    sleep: object({ seconds: int(1) }, ['seconds']),
  }),
  ResourceRequirements: object({ requests: mapOf(quantity), limits: mapOf(quantity) }),
  SecurityContext: object({
    allowPrivilegeEscalation: bool,
    readOnlyRootFilesystem: bool,
    runAsNonRoot: bool,
    runAsUser: int(0),
    runAsGroup: int(0),
    privileged: bool,
    capabilities: object({ add: arrayOf(str), drop: arrayOf(str) }),
    seccompProfile: ref('SeccompProfile'),
  }),
  SeccompProfile: object({ type: { enum: ['RuntimeDefault', 'Localhost', 'Unconfined'] }, localhostProfile: str }, ['type']),
  Container: object(
    {
      name: { type: 'string', pattern: dnsLabel },
      image: { type: 'string', pattern: '^\\S+$' },
      imagePullPolicy: { enum: ['Always', 'IfNotPresent', 'Never'] },
      command: arrayOf(str),
      args: arrayOf(str),
      workingDir: str,
      ports: arrayOf(
        object(
          { name: { type: 'string', pattern: '^[a-z0-9-]{1,15}$' }, containerPort: int(1, 65535), protocol: { enum: ['TCP', 'UDP', 'SCTP'] } },
          ['containerPort'],
        ),
      ),
      env: arrayOf(ref('EnvVar')),
      envFrom: arrayOf(ref('EnvFromSource')),
      resources: ref('ResourceRequirements'),
      volumeMounts: arrayOf(object({ name: str, mountPath: str, readOnly: bool, subPath: str }, ['name', 'mountPath'])),
      livenessProbe: ref('Probe'),
      readinessProbe: ref('Probe'),
      startupProbe: ref('Probe'),
      lifecycle: object({ preStop: ref('LifecycleHandler'), postStart: ref('LifecycleHandler') }),
      securityContext: ref('SecurityContext'),
      terminationMessagePolicy: { enum: ['File', 'FallbackToLogsOnError'] },
    },
    ['name', 'image'],
  ),
  PodSpec: object(
    {
      containers: arrayOf(ref('Container'), 1),
      initContainers: arrayOf(ref('Container')),
      volumes: arrayOf(
        object(
          {
            name: str,
            emptyDir: object({ medium: str, sizeLimit: quantity }),
            configMap: object({ name: str, optional: bool, defaultMode: int(0) }),
            secret: object({ secretName: str, optional: bool, defaultMode: int(0) }),
          },
          ['name'],
        ),
      ),
      securityContext: object({
        runAsNonRoot: bool,
        runAsUser: int(0),
        runAsGroup: int(0),
        fsGroup: int(0),
        fsGroupChangePolicy: str,
        seccompProfile: ref('SeccompProfile'),
        supplementalGroups: arrayOf(int(0)),
      }),
      serviceAccountName: str,
      automountServiceAccountToken: bool,
      enableServiceLinks: bool,
      terminationGracePeriodSeconds: int(0),
      nodeSelector: mapOf(str),
      priorityClassName: str,
      affinity: { type: 'object' },
      tolerations: arrayOf({ type: 'object' }),
      topologySpreadConstraints: arrayOf(
        object(
          {
            maxSkew: int(1),
            topologyKey: str,
            whenUnsatisfiable: { enum: ['DoNotSchedule', 'ScheduleAnyway'] },
            labelSelector: ref('LabelSelector'),
            minDomains: int(1),
          },
          ['maxSkew', 'topologyKey', 'whenUnsatisfiable'],
        ),
      ),
    },
    ['containers'],
  ),
  NetworkPolicyPeer: object({
    podSelector: ref('LabelSelector'),
    namespaceSelector: ref('LabelSelector'),
    ipBlock: object({ cidr: str, except: arrayOf(str) }, ['cidr']),
  }),
  NetworkPolicyPort: object({ port: intOrString, endPort: int(1, 65535), protocol: { enum: ['TCP', 'UDP', 'SCTP'] } }),
};

const kind = (apiVersion: string, kindName: string, spec: Record<string, JsonSchema>, required: string[] = ['apiVersion', 'kind', 'metadata']): JsonSchema =>
  object({ apiVersion: { const: apiVersion }, kind: { const: kindName }, metadata: ref('ObjectMeta'), ...spec }, required);

/** The schemas by `apiVersion/kind`. */
export const KIND_SCHEMAS: Record<string, JsonSchema> = {
  'apps/v1/Deployment': kind(
    'apps/v1',
    'Deployment',
    {
      spec: object(
        {
          replicas: int(0),
          revisionHistoryLimit: int(0),
          minReadySeconds: int(0),
          progressDeadlineSeconds: int(1),
          selector: ref('LabelSelector'),
          strategy: object({
            type: { enum: ['RollingUpdate', 'Recreate'] },
            rollingUpdate: object({ maxSurge: intOrString, maxUnavailable: intOrString }),
          }),
          template: object({ metadata: ref('TemplateMeta'), spec: ref('PodSpec') }, ['spec']),
        },
        ['selector', 'template'],
      ),
    },
    ['apiVersion', 'kind', 'metadata', 'spec'],
  ),
  'v1/Service': kind(
    'v1',
    'Service',
    {
      spec: object({
        type: { enum: ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'] },
        selector: mapOf(str),
        ports: arrayOf(
          object(
            { name: str, port: int(1, 65535), targetPort: intOrString, protocol: { enum: ['TCP', 'UDP', 'SCTP'] }, appProtocol: str, nodePort: int(1, 65535) },
            ['port'],
          ),
          1,
        ),
        sessionAffinity: str,
      }),
    },
    ['apiVersion', 'kind', 'metadata', 'spec'],
  ),
  'autoscaling/v2/HorizontalPodAutoscaler': kind(
    'autoscaling/v2',
    'HorizontalPodAutoscaler',
    {
      spec: object(
        {
          scaleTargetRef: object({ apiVersion: str, kind: str, name: str }, ['kind', 'name']),
          minReplicas: int(1),
          maxReplicas: int(1),
          metrics: arrayOf(
            object(
              {
                type: { enum: ['Resource', 'Pods', 'Object', 'External', 'ContainerResource'] },
                resource: object(
                  {
                    name: str,
                    target: object(
                      { type: { enum: ['Utilization', 'Value', 'AverageValue'] }, averageUtilization: int(1), averageValue: quantity, value: quantity },
                      ['type'],
                    ),
                  },
                  ['name', 'target'],
                ),
              },
              ['type'],
            ),
          ),
          behavior: object({
            scaleUp: ref('HPAScalingRules'),
            scaleDown: ref('HPAScalingRules'),
          }),
        },
        ['scaleTargetRef', 'maxReplicas'],
      ),
    },
    ['apiVersion', 'kind', 'metadata', 'spec'],
  ),
  'policy/v1/PodDisruptionBudget': kind(
    'policy/v1',
    'PodDisruptionBudget',
    {
      spec: object({
        minAvailable: intOrString,
        maxUnavailable: intOrString,
        selector: ref('LabelSelector'),
        unhealthyPodEvictionPolicy: { enum: ['IfHealthyBudget', 'AlwaysAllow'] },
      }),
    },
    ['apiVersion', 'kind', 'metadata', 'spec'],
  ),
  'networking.k8s.io/v1/NetworkPolicy': kind(
    'networking.k8s.io/v1',
    'NetworkPolicy',
    {
      spec: object(
        {
          podSelector: ref('LabelSelector'),
          policyTypes: arrayOf({ enum: ['Ingress', 'Egress'] }),
          ingress: arrayOf(object({ from: arrayOf(ref('NetworkPolicyPeer')), ports: arrayOf(ref('NetworkPolicyPort')) })),
          egress: arrayOf(object({ to: arrayOf(ref('NetworkPolicyPeer')), ports: arrayOf(ref('NetworkPolicyPort')) })),
        },
        ['podSelector'],
      ),
    },
    ['apiVersion', 'kind', 'metadata', 'spec'],
  ),
  'networking.k8s.io/v1/Ingress': kind(
    'networking.k8s.io/v1',
    'Ingress',
    {
      spec: object({
        ingressClassName: str,
        tls: arrayOf(object({ hosts: arrayOf(str), secretName: str })),
        rules: arrayOf(
          object({
            host: str,
            http: object(
              {
                paths: arrayOf(
                  object(
                    {
                      path: { type: 'string', pattern: '^/' },
                      pathType: { enum: ['Exact', 'Prefix', 'ImplementationSpecific'] },
                      backend: object({ service: object({ name: str, port: object({ name: str, number: int(1, 65535) }) }, ['name', 'port']) }),
                    },
                    ['pathType', 'backend'],
                  ),
                  1,
                ),
              },
              ['paths'],
            ),
          }),
        ),
      }),
    },
    ['apiVersion', 'kind', 'metadata', 'spec'],
  ),
  'v1/ConfigMap': kind('v1', 'ConfigMap', { data: mapOf(str), binaryData: mapOf(str), immutable: bool }),
  'v1/Secret': kind('v1', 'Secret', { data: mapOf(str), stringData: mapOf(str), type: str, immutable: bool }),
  'v1/Namespace': kind('v1', 'Namespace', { spec: { type: 'object' } }),
  'kustomize.config.k8s.io/v1beta1/Kustomization': object(
    {
      apiVersion: { const: 'kustomize.config.k8s.io/v1beta1' },
      kind: { const: 'Kustomization' },
      namespace: { type: 'string', pattern: dnsLabel },
      // Kept to kustomize v2 fields (Debian's kubectl 1.20 renders these overlays too).
      bases: arrayOf(str),
      resources: arrayOf(str),
      patchesStrategicMerge: arrayOf(str),
      patchesJson6902: arrayOf({ type: 'object' }),
      images: arrayOf(object({ name: str, newName: str, newTag: str, digest: str }, ['name'])),
      commonLabels: mapOf(str),
      commonAnnotations: mapOf(str),
      namePrefix: str,
      nameSuffix: str,
      configMapGenerator: arrayOf(
        object({ name: str, behavior: { enum: ['create', 'replace', 'merge'] }, literals: arrayOf({ type: 'string', pattern: '^[-._a-zA-Z0-9]+=' }), files: arrayOf(str) }, ['name']),
      ),
      secretGenerator: arrayOf(
        object(
          { name: str, behavior: { enum: ['create', 'replace', 'merge'] }, type: str, literals: arrayOf({ type: 'string', pattern: '^[-._a-zA-Z0-9]+=' }), files: arrayOf(str) },
          ['name'],
        ),
      ),
      generatorOptions: object({ disableNameSuffixHash: bool, labels: mapOf(str), annotations: mapOf(str) }),
    },
    ['apiVersion', 'kind'],
  ),
};
definitions.HPAScalingRules = object({
  stabilizationWindowSeconds: int(0, 3600),
  selectPolicy: { enum: ['Max', 'Min', 'Disabled'] },
  policies: arrayOf(object({ type: { enum: ['Pods', 'Percent'] }, value: int(1), periodSeconds: int(1, 1800) }, ['type', 'value', 'periodSeconds'])),
});

function typeOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

function matchesType(value: unknown, type: string): boolean {
  const actual = typeOf(value);
  return actual === type || (type === 'number' && actual === 'integer');
}

/** Problems of `value` against `schema`, as `path: message` strings; empty when valid. */
export function validate(value: unknown, schema: JsonSchema, at = '', options: { partial?: boolean } = {}): string[] {
  if (schema.$ref) {
    const target = definitions[schema.$ref.replace('#/definitions/', '')];
    if (!target) throw new Error(`unknown $ref ${schema.$ref}`);
    return validate(value, target, at, options);
  }
  const where = at || '(root)';
  if (schema.anyOf) {
    const results = schema.anyOf.map((s) => validate(value, s, at, options));
    return results.some((r) => r.length === 0) ? [] : [`${where}: matches none of the allowed forms (${results.map((r) => r[0]).join(' | ')})`];
  }
  if (schema.const !== undefined && value !== schema.const) return [`${where}: must be ${JSON.stringify(schema.const)}`];
  if (schema.enum && !schema.enum.includes(value)) return [`${where}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`];
  if (schema.type) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((t) => matchesType(value, t))) return [`${where}: expected ${types.join('|')}, got ${typeOf(value)}`];
  }
  const problems: string[] = [];
  if (typeof value === 'string' && schema.pattern && !new RegExp(schema.pattern).test(value)) {
    problems.push(`${where}: ${JSON.stringify(value)} does not match ${schema.pattern}`);
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) problems.push(`${where}: ${value} < ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) problems.push(`${where}: ${value} > ${schema.maximum}`);
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems && !options.partial) problems.push(`${where}: fewer than ${schema.minItems} items`);
    if (schema.items) value.forEach((item, i) => problems.push(...validate(item, schema.items!, `${at}[${i}]`, options)));
  }
  if (typeOf(value) === 'object') {
    const record = value as Record<string, unknown>;
    if (!options.partial) {
      for (const key of schema.required ?? []) if (!(key in record)) problems.push(`${at ? `${at}.` : ''}${key}: required`);
    }
    for (const [key, child] of Object.entries(record)) {
      const path = at ? `${at}.${key}` : key;
      const property = schema.properties?.[key];
      if (property) {
        // A strategic-merge patch deletes a field with null.
        if (child === null && options.partial) continue;
        problems.push(...validate(child, property, path, options));
      } else if (schema.additionalProperties === false) {
        problems.push(`${path}: unknown field`);
      } else if (typeof schema.additionalProperties === 'object') {
        problems.push(...validate(child, schema.additionalProperties, path, options));
      }
    }
  }
  return problems;
}

/** Validates one Kubernetes object (or, `partial`, a strategic-merge patch of one). */
export function validateObject(object: unknown, options: { partial?: boolean } = {}): string[] {
  const record = object as { apiVersion?: string; kind?: string; metadata?: { name?: string } };
  const key = `${record.apiVersion}/${record.kind}`;
  const schema = KIND_SCHEMAS[key];
  const name = `${record.kind ?? '?'} ${record.metadata?.name ?? '?'}`;
  if (!schema) return [`${name}: no schema for ${key} (add one to k8s-schemas.ts)`];
  return validate(object, schema, '', options).map((problem) => `${name}: ${problem}`);
}
