import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createProviderRouter } from './provider-router.js';
import { loadProvidersConfig, ProvidersConfigError, type ConfigIssue } from './providers-config.js';

const dir = mkdtempSync(join(tmpdir(), 'vivier-providers-'));
function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

function issuesOf(fn: () => unknown): ConfigIssue[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ProvidersConfigError) return err.issues;
    throw err;
  }
  throw new Error('expected a ProvidersConfigError');
}

describe('environment-based enablement', () => {
  it('enables only the simulator when no provider is configured', () => {
    const config = loadProvidersConfig({});
    expect(config.providers.map((p) => p.provider)).toEqual(['sim']);
    const router = createProviderRouter(config);
    expect(router.resolve('sim/fast')?.deployments).toEqual([
      { id: 'sim/fast', provider: 'sim', model: 'fast' },
    ]);
    expect(router.resolve('sim/anything-at-all')).toBeDefined();
    expect(router.resolve('openai/gpt-4o')).toBeUndefined();
    expect(router.listModels().map((m) => m.id)).toEqual(['sim/fast', 'sim/smart']);
  });

  it('enables each provider whose key (or host, for Ollama) is set, with the SDK variable names', () => {
    const config = loadProvidersConfig({
      OPENAI_API_KEY: 'sk-1',
      OPENAI_BASE_URL: 'https://gateway.example.com/openai/v1/',
      ANTHROPIC_API_KEY: 'sk-ant-1',
      GEMINI_API_KEY: 'AIza-1',
      GEMINI_BASE_URL: '',
      OLLAMA_HOST: 'gpu-box',
      PROVIDER_ALLOWED_HOSTS: 'gpu-box, 10.0.0.7',
    });
    expect(config.providers.map((p) => [p.provider, p.kind, p.baseUrl, p.apiKey])).toEqual([
      ['openai', 'openai', 'https://gateway.example.com/openai/v1', 'sk-1'],
      ['anthropic', 'anthropic', 'https://api.anthropic.com', 'sk-ant-1'],
      ['gemini', 'gemini', 'https://generativelanguage.googleapis.com', 'AIza-1'],
      ['ollama', 'ollama', 'http://gpu-box:11434', undefined],
    ]);
    expect(config.allowedHosts).toEqual(['gpu-box', '10.0.0.7']);
    const router = createProviderRouter(config);
    // Any model name of an enabled provider is accepted and passed through.
    expect(router.resolve('anthropic/claude-next-9')?.deployments[0]?.model).toBe('claude-next-9');
    expect(router.resolve('sim/fast')).toBeUndefined();
    expect(router.resolve('openai/gpt-4o-mini-2024-07-18')?.contextWindow).toBe(128_000);
    expect(router.resolve('ollama/llama3.2')?.contextWindow).toBe(4096);
    expect(router.resolve('openai/brand-new-model')?.contextWindow).toBe(8192);
  });

  it('names the variable that is wrong', () => {
    expect(
      issuesOf(() => loadProvidersConfig({ OPENAI_API_KEY: 'k', OPENAI_BASE_URL: 'api.openai.com' })),
    ).toEqual([{ path: 'OPENAI_BASE_URL', message: 'must be an http(s) URL, got "api.openai.com"' }]);
    const [missing] = issuesOf(() => loadProvidersConfig({ PROVIDERS_FILE: join(dir, 'nope.yaml') }));
    expect(missing?.path).toBe('PROVIDERS_FILE');
    expect(missing?.message).toMatch(/cannot read .*nope\.yaml/);
  });
});

describe('providers file', () => {
  const example = `
# Extra endpoints and routing. Keys come from the environment (apiKeyEnv), never the file.
providers:
  groq:
    kind: openai_compatible
    baseUrl: https://api.groq.com/openai/v1
    apiKeyEnv: GROQ_API_KEY
  local-vllm:
    kind: openai_compatible
    baseUrl: http://10.0.0.7:8000/v1
    includeUsage: false
deployments:
  - { id: mini-a, provider: openai, model: gpt-4o-mini, weight: 3 }
  - { id: mini-b, provider: openai, model: gpt-4o-mini, apiKeyEnv: OPENAI_API_KEY_2, weight: 1 }
  - { id: haiku, provider: anthropic, model: claude-haiku-4-5, timeoutMs: 60000, maxRetries: 1 }
  - { id: llama, provider: groq, model: llama-3.3-70b-versatile, contextWindow: 131072 }
aliases:
  - { alias: fast, deployments: [mini-a, mini-b, haiku], strategy: weighted }
  - { alias: cheap, deployments: [llama, mini-a] }
router:
  failureThreshold: 3
  cooldownMs: 10000
`;

  it('resolves a YAML file: deployments inherit their provider, aliases name deployments', () => {
    const config = loadProvidersConfig({
      PROVIDERS_FILE: file('providers.yaml', example),
      OPENAI_API_KEY: 'sk-1',
      OPENAI_API_KEY_2: 'sk-2',
      ANTHROPIC_API_KEY: 'sk-ant',
      GROQ_API_KEY: 'gsk',
    });
    expect(config.providers.map((p) => p.provider)).toEqual(['openai', 'anthropic', 'groq', 'local-vllm']);
    const byId = Object.fromEntries(config.deployments.map((d) => [d.id, d]));
    expect(byId['mini-b']).toMatchObject({
      provider: 'openai',
      kind: 'openai',
      apiKey: 'sk-2',
      weight: 1,
      baseUrl: 'https://api.openai.com/v1',
    });
    expect(byId['llama']).toMatchObject({
      kind: 'openai_compatible',
      baseUrl: 'https://api.groq.com/openai/v1',
      apiKey: 'gsk',
    });
    expect(byId['haiku']).toMatchObject({ timeoutMs: 60000, maxRetries: 1, apiKey: 'sk-ant' });
    expect(config.aliases).toEqual([
      { alias: 'fast', deployments: ['mini-a', 'mini-b', 'haiku'], strategy: 'weighted' },
      { alias: 'cheap', deployments: ['llama', 'mini-a'], strategy: 'ordered' },
    ]);
    expect(config.router).toEqual({ failureThreshold: 3, cooldownMs: 10000 });

    const router = createProviderRouter(config);
    expect(router.resolve('fast')).toMatchObject({
      type: 'alias',
      strategy: 'weighted',
      contextWindow: 128_000,
    });
    expect(router.resolve('openai/gpt-4o-mini')?.deployments.map((d) => d.id)).toEqual(['mini-a', 'mini-b']);
    expect(router.resolve('local-vllm/qwen2.5')?.deployments[0]).toEqual({
      id: 'local-vllm/qwen2.5',
      provider: 'local-vllm',
      model: 'qwen2.5',
    });
    const models = router.listModels();
    expect(models.slice(0, 2).map((m) => [m.id, m.type, m.deployments])).toEqual([
      ['fast', 'alias', ['mini-a', 'mini-b', 'haiku']],
      ['cheap', 'alias', ['llama', 'mini-a']],
    ]);
    expect(models.find((m) => m.id === 'groq/llama-3.3-70b-versatile')?.contextWindow).toBe(131072);
    expect(models.find((m) => m.id === 'anthropic/claude-sonnet-4-5')).toMatchObject({
      provider: 'anthropic',
      contextWindow: 200_000,
    });
  });

  it('accepts the example in the README as written', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const yaml = /```yaml\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(yaml).toBeDefined();
    const config = loadProvidersConfig({
      PROVIDERS_FILE: file('readme.yaml', yaml!),
      OPENAI_API_KEY: 'sk-1',
      OPENAI_API_KEY_2: 'sk-2',
      ANTHROPIC_API_KEY: 'sk-ant',
      GROQ_API_KEY: 'gsk',
    });
    expect(config.deployments.map((d) => d.id)).toEqual(['mini-a', 'mini-b', 'haiku', 'llama']);
    expect(config.router).toMatchObject({ failureThreshold: 5, cooldownMs: 30000, idleTimeoutMs: 60000 });
  });

  it('reads JSON with JSON.parse when the file ends in .json', () => {
    const path = file(
      'providers.json',
      JSON.stringify({
        deployments: [{ id: 's1', provider: 'sim', model: 'fast', firstTokenLatencyMs: 0 }],
        aliases: [{ alias: 'default', deployments: ['s1'] }],
      }),
    );
    const config = loadProvidersConfig({ PROVIDERS_FILE: path });
    expect(config.deployments[0]).toMatchObject({ id: 's1', kind: 'sim', firstTokenLatencyMs: 0 });
    expect(
      issuesOf(() => loadProvidersConfig({ PROVIDERS_FILE: file('bad.json', '{"deployments": [}') }))[0]
        ?.message,
    ).toMatch(/cannot parse/);
  });

  it('reports every schema error with its location', () => {
    const path = file(
      'schema.yaml',
      `
deployments:
  - { id: a, provider: openai, weigth: 2 }
  - { id: b, provider: "bad name", model: m, maxRetries: 99 }
aliases:
  - { alias: x, deployments: [a], strategy: random }
routing: {}
`,
    );
    const issues = issuesOf(() => loadProvidersConfig({ PROVIDERS_FILE: path }));
    const at = (p: string) => issues.find((i) => i.path === `${path}: ${p}`)?.message;
    expect(at('deployments[0].model')).toMatch(/Expected required property/);
    expect(at('deployments[0].weigth')).toMatch(/Unexpected property/);
    expect(at('deployments[1].provider')).toMatch(
      /Expected string to match .*\(a built-in provider or a name declared under `providers`\)/,
    );
    expect(at('deployments[1].maxRetries')).toMatch(/less or equal to 10/);
    expect(at('aliases[0].strategy')).toBe('must be one of weighted, ordered');
    expect(at('routing')).toMatch(/Unexpected property/);
  });

  it('reports every reference and key problem at once', () => {
    const path = file(
      'refs.yaml',
      `
providers:
  mystery: { baseUrl: "https://m.example.com/v1" }
  vllm: { kind: openai_compatible }
deployments:
  - { id: a, provider: openai, model: gpt-4o }
  - { id: b, provider: together, model: llama }
  - { id: c, provider: sim, model: fast, apiKeyEnv: NOT_SET_ANYWHERE }
  - { id: c, provider: sim, model: smart }
aliases:
  - { alias: fast, deployments: [c, ghost, c] }
`,
    );
    const issues = issuesOf(() => loadProvidersConfig({ PROVIDERS_FILE: path }));
    expect(issues.map((i) => `${i.path.replace(`${path}: `, '')}: ${i.message}`)).toEqual([
      'providers.mystery.kind: required for a provider that is not built in (e.g. openai_compatible)',
      'providers.vllm.baseUrl: required for a provider that is not built in',
      'deployments[0].provider: openai is not enabled: set OPENAI_API_KEY, or apiKey/apiKeyEnv on the deployment',
      'deployments[1].provider: unknown provider "together": declare it under providers (with kind and baseUrl)',
      'deployments[2].apiKeyEnv: environment variable NOT_SET_ANYWHERE is not set',
      'deployments[3].id: duplicate deployment id "c"',
      'aliases[0].deployments[1]: no deployment with id "ghost"',
      'aliases[0].deployments[2]: "c" is listed twice',
    ]);
  });

  it('treats an empty YAML file as no configuration and rejects malformed YAML', () => {
    expect(
      loadProvidersConfig({ PROVIDERS_FILE: file('empty.yaml', '# nothing yet\n') }).providers.map(
        (p) => p.provider,
      ),
    ).toEqual(['sim']);
    expect(
      issuesOf(() =>
        loadProvidersConfig({ PROVIDERS_FILE: file('broken.yaml', 'deployments: [\n  - {id: a\n') }),
      )[0]?.message,
    ).toMatch(/cannot parse/);
  });
});
