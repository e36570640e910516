// Provider configuration from the environment (the official SDKs' variable names) and the
// providers file, validated in one pass so that every problem is reported at once, each naming
// the variable or the file entry at fault.
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import * as yamlModule from 'yaml';
import { ANTHROPIC_DEFAULT_BASE_URL } from './anthropic.adapter.js';
import { GEMINI_DEFAULT_BASE_URL } from './gemini.adapter.js';
import { ollamaBaseUrl } from './ollama.adapter.js';
import { OPENAI_DEFAULT_BASE_URL } from './openai.adapter.js';
import {
  BUILT_IN_PROVIDERS,
  ProvidersFileSchema,
  type AliasEntry,
  type DeploymentEntry,
  type ProviderEntry,
  type ProviderKind,
  type ProvidersFile,
  type RouterSettingsEntry,
} from './providers-file.schema.js';
import { parseAllowedHosts } from './ssrf.js';

/** One endpoint: a provider's protocol, URL, key and knobs. Deployments inherit from it. */
export type EndpointConfig = Omit<ProviderEntry, 'kind' | 'apiKeyEnv'> & {
  /** Provider id: a built-in name or a name from the providers file. */
  provider: string;
  kind: ProviderKind;
  /**
   * Providers to try next, in order, when a direct model id of this one fails before its first
   * token (set through the admin API). Each is asked for the same model name, or for its first
   * listed model when it lists models and not this one.
   */
  fallbacks?: string[];
};

/** A model on an endpoint, the unit the router balances, retries and circuit-breaks. */
export type DeploymentConfig = EndpointConfig &
  Pick<DeploymentEntry, 'id' | 'model' | 'weight' | 'contextWindow'>;

export type AliasConfig = AliasEntry;
export type RouterSettings = RouterSettingsEntry;

export interface ProvidersConfig {
  /** Enabled providers: each accepts `<provider>/<any model name>`. */
  providers: EndpointConfig[];
  deployments: DeploymentConfig[];
  aliases: AliasConfig[];
  router?: RouterSettings;
  /** `PROVIDER_ALLOWED_HOSTS`: private hosts that untrusted base URLs may still use. */
  allowedHosts?: string[];
  /** The simulator is enabled only because no other provider is (it goes when one is configured). */
  simulatorFallback?: boolean;
}

export interface ConfigIssue {
  /** The variable (`OPENAI_BASE_URL`) or file location (`providers.yaml: deployments[1].model`). */
  path: string;
  message: string;
}

export class ProvidersConfigError extends Error {
  constructor(readonly issues: ConfigIssue[]) {
    super(`invalid provider configuration\n${issues.map((i) => `  - ${i.path}: ${i.message}`).join('\n')}`);
    this.name = 'ProvidersConfigError';
  }
}

/** Environment variables this library reads (all optional). */
export const PROVIDER_ENV_VARS = [
  'OPENAI_API_KEY',
  'OPENAI_BASE_URL',
  'ANTHROPIC_API_KEY',
  'ANTHROPIC_BASE_URL',
  'GEMINI_API_KEY',
  'GEMINI_BASE_URL',
  'OLLAMA_HOST',
  'PROVIDERS_FILE',
  'PROVIDER_ALLOWED_HOSTS',
] as const;

export type ProviderEnv = Readonly<Record<string, string | undefined>>;

const yamlParse: (text: string) => unknown =
  (yamlModule as { parse?: (t: string) => unknown }).parse ??
  // yaml 1.x is CommonJS without detectable named exports: under native ESM only `default` exists.
  (yamlModule as unknown as { default: { parse: (t: string) => unknown } }).default.parse;

function pointerToPath(pointer: string): string {
  return pointer
    .split('/')
    .slice(1)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((acc, part) => (/^\d+$/.test(part) ? `${acc}[${part}]` : acc ? `${acc}.${part}` : part), '');
}

/** Schema errors, one per location, in words an operator understands. */
function schemaIssues(data: unknown, source: string): ConfigIssue[] {
  const seen = new Set<string>();
  const issues: ConfigIssue[] = [];
  for (const error of Value.Errors(ProvidersFileSchema, data)) {
    const path = pointerToPath(error.path);
    if (seen.has(path)) continue;
    seen.add(path);
    const schema = error.schema as { anyOf?: Array<{ const?: unknown }>; description?: unknown };
    const options = schema.anyOf;
    const message =
      options && options.every((o) => typeof o.const === 'string')
        ? `must be one of ${options.map((o) => String(o.const)).join(', ')}`
        : typeof schema.description === 'string' && path !== ''
          ? `${error.message} (${schema.description})`
          : error.message;
    issues.push({ path: `${source}: ${path || '(root)'}`, message });
  }
  return issues;
}

/** Parses and schema-checks a providers file's text. JSON for `.json`, YAML otherwise. */
export function parseProvidersFile(text: string, source = 'providers file'): ProvidersFile {
  let data: unknown;
  try {
    data = extname(source).toLowerCase() === '.json' ? JSON.parse(text) : yamlParse(text);
  } catch (err) {
    throw new ProvidersConfigError([{ path: source, message: `cannot parse: ${(err as Error).message}` }]);
  }
  // An empty YAML file is an empty configuration, not an error.
  if (data === null || data === undefined) data = {};
  const issues = schemaIssues(data, source);
  if (issues.length > 0) throw new ProvidersConfigError(issues);
  return data as ProvidersFile;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

function checkUrl(value: string, path: string, issues: ConfigIssue[]): string | undefined {
  try {
    const url = new URL(value);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('scheme');
    return value.replace(/\/+$/, '');
  } catch {
    issues.push({ path, message: `must be an http(s) URL, got ${JSON.stringify(value)}` });
    return undefined;
  }
}

const BUILT_IN_ENV: Record<
  'openai' | 'anthropic' | 'gemini',
  { key: string; url: string; defaultUrl: string }
> = {
  openai: { key: 'OPENAI_API_KEY', url: 'OPENAI_BASE_URL', defaultUrl: OPENAI_DEFAULT_BASE_URL },
  anthropic: { key: 'ANTHROPIC_API_KEY', url: 'ANTHROPIC_BASE_URL', defaultUrl: ANTHROPIC_DEFAULT_BASE_URL },
  gemini: { key: 'GEMINI_API_KEY', url: 'GEMINI_BASE_URL', defaultUrl: GEMINI_DEFAULT_BASE_URL },
};

function isBuiltIn(name: string): name is (typeof BUILT_IN_PROVIDERS)[number] {
  return (BUILT_IN_PROVIDERS as readonly string[]).includes(name);
}

/** Copies the defined endpoint fields of a file entry (dropping apiKeyEnv, which is resolved). */
function endpointFields(entry: ProviderEntry | DeploymentEntry): Partial<EndpointConfig> {
  const out: Record<string, unknown> = {};
  const keys = [
    'baseUrl',
    'apiKey',
    'headers',
    'untrusted',
    'anthropicVersion',
    'includeUsage',
    'maxTokensField',
    'tokenizer',
    'tokensPerSecond',
    'firstTokenLatencyMs',
    'timeoutMs',
    'idleTimeoutMs',
    'maxRetries',
  ] as const;
  for (const k of keys) if (entry[k] !== undefined) out[k] = entry[k];
  return out as Partial<EndpointConfig>;
}

/**
 * Turns a (schema-valid) providers file plus the environment into the router's configuration:
 * which providers are enabled, every deployment with its endpoint settings filled in, aliases
 * checked against deployments. Throws ProvidersConfigError listing every problem.
 */
export function resolveProvidersConfig(
  file: ProvidersFile,
  env: ProviderEnv,
  source = 'providers file',
): ProvidersConfig {
  const issues: ConfigIssue[] = [];
  const at = (path: string) => `${source}: ${path}`;
  const keyFrom = (entry: ProviderEntry | DeploymentEntry, path: string): string | undefined => {
    if (entry.apiKey !== undefined) return entry.apiKey;
    if (entry.apiKeyEnv === undefined) return undefined;
    const value = nonEmpty(env[entry.apiKeyEnv]);
    if (value === undefined)
      issues.push({
        path: at(`${path}.apiKeyEnv`),
        message: `environment variable ${entry.apiKeyEnv} is not set`,
      });
    return value;
  };

  const endpoints = new Map<string, EndpointConfig>();
  const fileProviders = file.providers ?? {};

  // Built-in vendors: enabled when a key is set (environment or file).
  for (const name of ['openai', 'anthropic', 'gemini'] as const) {
    const spec = BUILT_IN_ENV[name];
    const entry = fileProviders[name];
    if (entry?.kind !== undefined && entry.kind !== name)
      issues.push({
        path: at(`providers.${name}.kind`),
        message: `${name} is built in; its kind is ${name}`,
      });
    const envUrl = nonEmpty(env[spec.url]);
    const baseUrl = entry?.baseUrl
      ? checkUrl(entry.baseUrl, at(`providers.${name}.baseUrl`), issues)
      : envUrl
        ? checkUrl(envUrl, spec.url, issues)
        : spec.defaultUrl;
    const apiKey = (entry ? keyFrom(entry, `providers.${name}`) : undefined) ?? nonEmpty(env[spec.key]);
    if (apiKey === undefined) {
      if (entry)
        issues.push({
          path: at(`providers.${name}`),
          message: `no API key: set ${spec.key}, apiKey or apiKeyEnv`,
        });
      continue;
    }
    endpoints.set(name, {
      ...(entry ? endpointFields(entry) : {}),
      provider: name,
      kind: name,
      ...(baseUrl ? { baseUrl } : {}),
      apiKey,
    });
  }

  // Ollama needs no key: OLLAMA_HOST (or a file entry) is what enables it.
  const ollamaEntry = fileProviders.ollama;
  const ollamaHost = nonEmpty(env.OLLAMA_HOST);
  if (ollamaEntry?.kind !== undefined && ollamaEntry.kind !== 'ollama')
    issues.push({ path: at('providers.ollama.kind'), message: 'ollama is built in; its kind is ollama' });
  if (ollamaEntry || ollamaHost) {
    let baseUrl: string | undefined;
    if (ollamaEntry?.baseUrl) baseUrl = checkUrl(ollamaEntry.baseUrl, at('providers.ollama.baseUrl'), issues);
    else {
      try {
        baseUrl = ollamaBaseUrl(ollamaHost);
      } catch {
        issues.push({
          path: 'OLLAMA_HOST',
          message: `must be host[:port] or an http(s) URL, got ${JSON.stringify(ollamaHost)}`,
        });
      }
    }
    const apiKey = ollamaEntry ? keyFrom(ollamaEntry, 'providers.ollama') : undefined;
    endpoints.set('ollama', {
      ...(ollamaEntry ? endpointFields(ollamaEntry) : {}),
      provider: 'ollama',
      kind: 'ollama',
      ...(baseUrl ? { baseUrl } : {}),
      ...(apiKey ? { apiKey } : {}),
    });
  }

  // Named endpoints declared in the file (OpenAI-compatible servers, a second Ollama, …).
  for (const [name, entry] of Object.entries(fileProviders)) {
    if (isBuiltIn(name)) continue;
    const path = `providers.${name}`;
    if (!new RegExp('^[A-Za-z0-9][A-Za-z0-9._-]*$').test(name) || name.length > 64) {
      issues.push({
        path: at(path),
        message: 'a provider name is letters, digits, ".", "_" or "-" (at most 64)',
      });
      continue;
    }
    if (entry.kind === undefined) {
      issues.push({
        path: at(`${path}.kind`),
        message: `required for a provider that is not built in (e.g. openai_compatible)`,
      });
      continue;
    }
    let baseUrl: string | undefined;
    if (entry.baseUrl !== undefined) baseUrl = checkUrl(entry.baseUrl, at(`${path}.baseUrl`), issues);
    else if (entry.kind !== 'sim')
      issues.push({ path: at(`${path}.baseUrl`), message: 'required for a provider that is not built in' });
    const apiKey = keyFrom(entry, path);
    endpoints.set(name, {
      ...endpointFields(entry),
      provider: name,
      kind: entry.kind,
      ...(baseUrl ? { baseUrl } : {}),
      ...(apiKey ? { apiKey } : {}),
    });
  }

  if (fileProviders.sim)
    endpoints.set('sim', { ...endpointFields(fileProviders.sim), provider: 'sim', kind: 'sim' });

  // Deployments: inherit their provider's endpoint; their own fields override.
  const deployments: DeploymentConfig[] = [];
  const ids = new Set<string>();
  (file.deployments ?? []).forEach((dep, i) => {
    const path = `deployments[${i}]`;
    if (ids.has(dep.id))
      issues.push({ path: at(`${path}.id`), message: `duplicate deployment id "${dep.id}"` });
    ids.add(dep.id);
    let base = endpoints.get(dep.provider);
    const ownKey = keyFrom(dep, path);
    if (dep.kind !== undefined && base && dep.kind !== base.kind)
      issues.push({
        path: at(`${path}.kind`),
        message: `provider ${dep.provider} speaks ${base.kind}, not ${dep.kind}`,
      });
    if (!base) {
      if (dep.provider === 'sim') {
        base = { provider: 'sim', kind: 'sim' };
        endpoints.set('sim', base);
      } else if (dep.provider === 'ollama') {
        base = { provider: 'ollama', kind: 'ollama', baseUrl: ollamaBaseUrl(undefined) };
      } else if (isBuiltIn(dep.provider)) {
        const spec = BUILT_IN_ENV[dep.provider as 'openai' | 'anthropic' | 'gemini'];
        if (ownKey === undefined) {
          issues.push({
            path: at(`${path}.provider`),
            message: `${dep.provider} is not enabled: set ${spec.key}, or apiKey/apiKeyEnv on the deployment`,
          });
          return;
        }
        base = {
          provider: dep.provider,
          kind: dep.provider as ProviderKind,
          baseUrl: nonEmpty(env[spec.url]) ?? spec.defaultUrl,
        };
      } else if (dep.kind !== undefined) {
        // A compatible server declared only through its deployment becomes a provider too.
        base = { provider: dep.provider, kind: dep.kind };
      } else {
        issues.push({
          path: at(`${path}.provider`),
          message: `unknown provider "${dep.provider}": declare it under providers (with kind and baseUrl)`,
        });
        return;
      }
    }
    const merged: DeploymentConfig = {
      ...base,
      ...endpointFields(dep),
      id: dep.id,
      model: dep.model,
      provider: dep.provider,
      kind: base.kind,
    };
    if (ownKey !== undefined) merged.apiKey = ownKey;
    if (dep.weight !== undefined) merged.weight = dep.weight;
    if (dep.contextWindow !== undefined) merged.contextWindow = dep.contextWindow;
    if (dep.baseUrl !== undefined) {
      const url = checkUrl(dep.baseUrl, at(`${path}.baseUrl`), issues);
      if (url) merged.baseUrl = url;
    }
    if (merged.baseUrl === undefined && merged.kind !== 'sim') {
      issues.push({
        path: at(`${path}.baseUrl`),
        message: `required: provider ${dep.provider} has no base URL`,
      });
      return;
    }
    if (!endpoints.has(dep.provider) && !isBuiltIn(dep.provider)) {
      const { id: _id, model: _model, weight: _weight, contextWindow: _cw, ...endpoint } = merged;
      endpoints.set(dep.provider, endpoint);
    }
    deployments.push(merged);
  });

  const aliases: AliasConfig[] = [];
  const aliasNames = new Set<string>();
  (file.aliases ?? []).forEach((alias, i) => {
    const path = `aliases[${i}]`;
    if (aliasNames.has(alias.alias))
      issues.push({ path: at(`${path}.alias`), message: `duplicate alias "${alias.alias}"` });
    aliasNames.add(alias.alias);
    const seen = new Set<string>();
    alias.deployments.forEach((id, j) => {
      if (!ids.has(id))
        issues.push({ path: at(`${path}.deployments[${j}]`), message: `no deployment with id "${id}"` });
      if (seen.has(id))
        issues.push({ path: at(`${path}.deployments[${j}]`), message: `"${id}" is listed twice` });
      seen.add(id);
    });
    aliases.push({
      alias: alias.alias,
      deployments: [...alias.deployments],
      strategy: alias.strategy ?? 'ordered',
    });
  });

  // The simulator is what answers when nothing else is configured.
  const others = [...endpoints.keys()].filter((p) => p !== 'sim');
  const simulatorFallback = others.length === 0 && !endpoints.has('sim');
  if (simulatorFallback) endpoints.set('sim', { provider: 'sim', kind: 'sim' });

  if (issues.length > 0) throw new ProvidersConfigError(issues);
  return {
    providers: [...endpoints.values()],
    deployments,
    aliases,
    ...(file.router ? { router: file.router } : {}),
    allowedHosts: parseAllowedHosts(env.PROVIDER_ALLOWED_HOSTS),
    ...(simulatorFallback ? { simulatorFallback } : {}),
  };
}

/**
 * The whole configuration from an environment: provider variables, `PROVIDERS_FILE` (YAML, or
 * JSON when it ends in .json) and `PROVIDER_ALLOWED_HOSTS`. Throws ProvidersConfigError.
 */
export function loadProvidersConfig(env: ProviderEnv = process.env): ProvidersConfig {
  const path = nonEmpty(env.PROVIDERS_FILE);
  let file: ProvidersFile = {};
  if (path !== undefined) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new ProvidersConfigError([
        { path: 'PROVIDERS_FILE', message: `cannot read ${path}: ${(err as Error).message}` },
      ]);
    }
    file = parseProvidersFile(text, path);
  }
  return resolveProvidersConfig(file, env, path ?? 'providers file');
}

const optionalVar = (description: string) => Type.Optional(Type.String({ description }));

/**
 * The variables above as configuration schema properties (the official SDKs' names), for a
 * service's configuration schema: documented, validated as strings, passed through.
 */
export const providerConfigProperties = {
  OPENAI_API_KEY: optionalVar('Enables the `openai` provider.'),
  OPENAI_BASE_URL: optionalVar('OpenAI base URL, including /v1 (default https://api.openai.com/v1).'),
  ANTHROPIC_API_KEY: optionalVar('Enables the `anthropic` provider.'),
  ANTHROPIC_BASE_URL: optionalVar('Anthropic base URL (default https://api.anthropic.com).'),
  GEMINI_API_KEY: optionalVar('Enables the `gemini` provider.'),
  GEMINI_BASE_URL: optionalVar('Gemini base URL (default https://generativelanguage.googleapis.com).'),
  OLLAMA_HOST: optionalVar('Enables the `ollama` provider: host[:port] or URL.'),
  PROVIDERS_FILE: optionalVar('Providers file (YAML, or JSON when it ends in .json): compatible servers, deployments, aliases, routing.'),
  PROVIDER_ALLOWED_HOSTS: optionalVar('Comma-separated private hosts that provider URLs set through the admin API may use.'),
} satisfies Record<(typeof PROVIDER_ENV_VARS)[number], unknown>;

/**
 * The providers configuration of a service: its validated provider variables over `env` (a
 * providers file may name further key variables with `apiKeyEnv`). Invalid entries become the
 * error `invalid` makes of them, so a service stops at start naming the variable or file entry.
 */
export function providersFromConfig(
  config: Partial<Record<(typeof PROVIDER_ENV_VARS)[number], string | undefined>>,
  env: ProviderEnv,
  invalid: (issues: ConfigIssue[]) => Error,
): ProvidersConfig {
  const merged: Record<string, string | undefined> = { ...env };
  for (const name of PROVIDER_ENV_VARS) merged[name] = config[name];
  try {
    return loadProvidersConfig(merged);
  } catch (error) {
    if (error instanceof ProvidersConfigError) throw invalid(error.issues);
    throw error;
  }
}
