// Provider settings from the admin API laid over the start configuration, and the router taking a
// new configuration while it serves (over real HTTP, against the provider simulator).
import { startProviderSim, type ProviderSim } from '@vivier/provider-sim';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  applyProviderSettings,
  createProviderRouter,
  ProviderError,
  ProviderSettingsSync,
  sealEventSecret,
  type FallbackRecord,
  type StoredProviderSettings,
  type ProviderRouter,
  type ProviderSettings,
  type ProvidersConfig,
} from '../src/index.js';

let sim: ProviderSim;
const routers: ProviderRouter[] = [];

beforeAll(async () => {
  sim = await startProviderSim({ port: 0 });
});
afterEach(async () => {
  await Promise.all(routers.splice(0).map((r) => r.close()));
});
afterAll(async () => {
  await sim.close();
});

const ROUTING = { weight: 1, timeoutMs: 60_000, maxRetries: 0, fallbacks: [] };

function setting(providerId: string, over: Partial<ProviderSettings> = {}): ProviderSettings {
  return {
    providerId,
    kind: 'openai_compatible',
    enabled: true,
    baseUrl: `${sim.url}/v1`,
    models: [],
    routing: ROUTING,
    apiKey: null,
    revision: 1,
    ...over,
  };
}

/** What a service started with: openai (from the environment) with one deployment and an alias on it. */
function started(): ProvidersConfig {
  const openai = { provider: 'openai', kind: 'openai' as const, baseUrl: `${sim.url}/v1`, apiKey: 'sk-env' };
  return {
    providers: [openai, { provider: 'sim', kind: 'sim' }],
    deployments: [{ ...openai, id: 'mini', model: 'gpt-4o-mini' }],
    aliases: [{ alias: 'fast', deployments: ['mini'], strategy: 'ordered' }],
    allowedHosts: ['127.0.0.1'],
  };
}

async function text(router: ProviderRouter, modelId: string, content = 'echo: one two three'): Promise<string> {
  const completion = await router.complete(modelId, { messages: [{ role: 'user', content }] });
  return completion.text;
}

describe('applyProviderSettings', () => {
  it('turns a provider off with its deployments; an alias left with none goes', () => {
    const { config, skipped } = applyProviderSettings(started(), [setting('openai', { kind: 'openai', enabled: false })]);
    expect(skipped).toEqual([]);
    expect(config.providers.map((p) => p.provider)).toEqual(['sim']);
    expect(config.deployments).toEqual([]);
    expect(config.aliases).toEqual([]);
  });

  it("replaces a provider's endpoint and routing, keeps the start key when none is set, adds listed models", () => {
    const { config } = applyProviderSettings(started(), [
      setting('openai', {
        kind: 'openai',
        baseUrl: null,
        models: ['gpt-4o-mini', 'gpt-4.1'],
        routing: { weight: 5, timeoutMs: 9000, maxRetries: 1, fallbacks: ['acme'] },
      }),
    ]);
    const openai = config.providers.find((p) => p.provider === 'openai');
    // URL null: the one started with; no admin key: the environment's.
    expect(openai).toMatchObject({ baseUrl: `${sim.url}/v1`, apiKey: 'sk-env', timeoutMs: 9000, maxRetries: 1, fallbacks: ['acme'] });
    expect(openai?.untrusted).toBeUndefined();
    // The file's deployment takes the new routing; the listed model it lacked is added once.
    expect(config.deployments.map((d) => [d.id, d.model, d.weight, d.timeoutMs])).toEqual([
      ['mini', 'gpt-4o-mini', 5, 9000],
      ['openai/gpt-4.1', 'gpt-4.1', 5, 9000],
    ]);
    expect(config.aliases).toEqual(started().aliases);
  });

  it('marks an admin-set URL untrusted and uses the admin key over the start one', () => {
    const { config } = applyProviderSettings(started(), [
      setting('openai', { kind: 'openai', baseUrl: 'https://llm-proxy.example/v1', apiKey: 'sk-admin' }),
    ]);
    expect(config.providers.find((p) => p.provider === 'openai')).toMatchObject({
      baseUrl: 'https://llm-proxy.example/v1',
      apiKey: 'sk-admin',
      untrusted: true,
    });
    expect(config.deployments[0]).toMatchObject({ id: 'mini', baseUrl: 'https://llm-proxy.example/v1', apiKey: 'sk-admin', untrusted: true });
  });

  it("never sends the start configuration's key or headers to a URL the admin API chose", () => {
    const withHeaders = started();
    withHeaders.providers[0] = { ...withHeaders.providers[0]!, headers: { 'x-org': 'acme' } };
    withHeaders.deployments[0] = { ...withHeaders.deployments[0]!, headers: { 'x-org': 'acme' } };
    // Same kind, another URL, no key set: off (a vendor needs a key), not on the operator's key.
    const moved = applyProviderSettings(withHeaders, [setting('openai', { kind: 'openai', baseUrl: 'https://elsewhere.example/v1' })]);
    expect(moved.skipped).toEqual([{ providerId: 'openai', reason: 'no API key: openai needs one' }]);
    // Another kind at another URL: nothing of the start endpoint, on the endpoint or its deployments.
    const { config } = applyProviderSettings(withHeaders, [setting('openai', { kind: 'openai_compatible', baseUrl: 'https://elsewhere.example/v1' })]);
    const endpoint = config.providers.find((p) => p.provider === 'openai')!;
    expect(endpoint).toMatchObject({ kind: 'openai_compatible', baseUrl: 'https://elsewhere.example/v1', untrusted: true });
    expect(endpoint.apiKey).toBeUndefined();
    expect(endpoint.headers).toBeUndefined();
    expect(config.deployments[0]).toMatchObject({ id: 'mini', baseUrl: 'https://elsewhere.example/v1', untrusted: true });
    expect(config.deployments[0]!.apiKey).toBeUndefined();
    expect(config.deployments[0]!.headers).toBeUndefined();
    // A vendor's default URL for a provider made through the API is checked too (Ollama's is loopback).
    expect(applyProviderSettings(started(), [setting('local', { kind: 'ollama', baseUrl: null })]).config.providers.find((p) => p.provider === 'local')).toMatchObject({
      baseUrl: 'http://127.0.0.1:11434',
      untrusted: true,
    });
  });

  it('leaves off a vendor without a key and a compatible server without a URL, saying why', () => {
    const { config, skipped } = applyProviderSettings(started(), [
      setting('anthropic', { kind: 'anthropic', baseUrl: null }),
      setting('local', { baseUrl: null }),
    ]);
    expect(skipped).toEqual([
      { providerId: 'anthropic', reason: 'no API key: anthropic needs one' },
      { providerId: 'local', reason: 'an openai_compatible provider needs a base URL' },
    ]);
    expect(config.providers.map((p) => p.provider)).toEqual(['openai', 'sim']);
  });

  it('drops the simulator that was on only because nothing else was, and keeps a declared one', () => {
    const fallbackOnly: ProvidersConfig = { providers: [{ provider: 'sim', kind: 'sim' }], deployments: [], aliases: [], simulatorFallback: true };
    const applied = applyProviderSettings(fallbackOnly, [setting('acme')]).config;
    expect(applied.providers.map((p) => p.provider)).toEqual(['acme']);
    expect(applied.simulatorFallback).toBeUndefined();
    // Turned off again: the simulator answers once more.
    expect(applyProviderSettings(fallbackOnly, [setting('acme', { enabled: false })]).config).toMatchObject({
      providers: [{ provider: 'sim' }],
      simulatorFallback: true,
    });
    expect(applyProviderSettings(started(), [setting('acme')]).config.providers.map((p) => p.provider)).toEqual(['openai', 'sim', 'acme']);
  });
});

describe('router.reconfigure', () => {
  it('serves a provider added at run time with its key, and refuses one turned off', async () => {
    const base = started();
    const router = createProviderRouter(base);
    routers.push(router);
    expect(router.resolve('acme/llama-3')).toBeUndefined();

    await router.reconfigure(applyProviderSettings(base, [setting('acme', { apiKey: 'sk-acme', models: ['llama-3'] })]).config);
    expect(await text(router, 'acme/llama-3')).toBe('one two three');
    const seen = sim.requests().filter((r) => r.model === 'llama-3');
    expect(seen).toHaveLength(1);
    expect(seen[0]?.headers.authorization).toBe('Bearer sk-acme');
    expect(router.listModels().map((m) => m.id)).toContain('acme/llama-3');

    await router.reconfigure(applyProviderSettings(base, [setting('openai', { kind: 'openai', enabled: false })]).config);
    expect(router.resolve('acme/llama-3')).toBeUndefined();
    expect(router.resolve('openai/gpt-4o-mini')).toBeUndefined();
    expect(router.resolve('fast')).toBeUndefined();
    await expect(text(router, 'openai/gpt-4o-mini')).rejects.toMatchObject({ kind: 'not_found' });
  });

  it('lets a reply that started before the change finish on the old endpoint', async () => {
    sim.setFaults({ tokensPerSecond: 40 }, 'paced-reconf');
    const base = started();
    const router = createProviderRouter(base);
    routers.push(router);
    const words = Array.from({ length: 20 }, (_, i) => `w${i}`).join(' ');
    let ended = false;
    const reply = text(router, 'openai/paced-reconf', `echo: ${words}`).finally(() => (ended = true));
    await new Promise((resolve) => setTimeout(resolve, 150));
    // The endpoint changes (a new key) mid-reply: reconfigure does not wait for the reply, whose
    // old connections close once it has ended.
    await router.reconfigure(applyProviderSettings(base, [setting('openai', { kind: 'openai', baseUrl: null, apiKey: 'sk-rotated' })]).config);
    expect(ended).toBe(false);
    expect(await reply).toBe(words);
    expect(await text(router, 'openai/after-reconf')).toBe('one two three');
    expect(sim.requests().find((r) => r.model === 'after-reconf')?.headers.authorization).toBe('Bearer sk-rotated');
  });

  it('keeps the circuit of a deployment whose endpoint did not change, and starts afresh when it did', async () => {
    sim.setFaults({ status5xx: 503 }, 'reconf-down');
    const base: ProvidersConfig = {
      ...started(),
      deployments: [{ ...started().deployments[0]!, id: 'down', model: 'reconf-down', maxRetries: 0 }],
      aliases: [],
      router: { failureThreshold: 1, cooldownMs: 60_000 },
    };
    const router = createProviderRouter(base);
    routers.push(router);
    await expect(text(router, 'openai/reconf-down')).rejects.toBeInstanceOf(ProviderError);
    const state = () => router.circuits().find((c) => c.deploymentId === 'down')?.state;
    expect(state()).toBe('open');

    // Only the routing of another provider changed: still open, so no request reaches the simulator.
    await router.reconfigure(applyProviderSettings(base, [setting('acme')]).config);
    expect(state()).toBe('open');
    const before = sim.requests().filter((r) => r.model === 'reconf-down').length;
    await expect(text(router, 'openai/reconf-down')).rejects.toMatchObject({ status: 503 });
    expect(sim.requests().filter((r) => r.model === 'reconf-down')).toHaveLength(before);

    // A new key is a new endpoint: a fresh circuit, and the request goes out.
    await router.reconfigure(applyProviderSettings(base, [setting('openai', { kind: 'openai', baseUrl: null, apiKey: 'sk-new' })]).config);
    expect(state()).toBe('closed');
    await expect(text(router, 'openai/reconf-down')).rejects.toMatchObject({ kind: 'server' });
    expect(sim.requests().filter((r) => r.model === 'reconf-down')).toHaveLength(before + 1);
  });
});

describe('provider fallbacks', () => {
  it("moves to the fallback provider's listed model before the first token, and never when the model is its own", async () => {
    sim.setFaults({ status5xx: 503 }, 'primary-down');
    const fallbacks: FallbackRecord[] = [];
    const base = started();
    const router = createProviderRouter(base, { onFallback: (f) => fallbacks.push(f) });
    routers.push(router);
    await router.reconfigure(
      applyProviderSettings(base, [
        setting('primary', { apiKey: 'sk-primary', routing: { ...ROUTING, fallbacks: ['backup', 'gone'] } }),
        setting('backup', { models: ['backup-model'], apiKey: 'sk-backup' }),
        setting('gone', { enabled: false }),
      ]).config,
    );
    expect(router.resolve('primary/primary-down')).toMatchObject({
      deployments: [
        { provider: 'primary', model: 'primary-down' },
        { provider: 'backup', model: 'backup-model' },
      ],
    });
    const completion = await router.complete('primary/primary-down', { messages: [{ role: 'user', content: 'echo: saved' }] });
    expect(completion.text).toBe('saved');
    expect(completion.route).toMatchObject({ provider: 'backup', model: 'backup-model' });
    expect(fallbacks.map((f) => `${f.from}>${f.to}:${f.error.kind}`)).toEqual(['primary/primary-down>backup/backup-model:server']);
    // A provider with no fallbacks of its own fails as before.
    await expect(text(router, 'backup/primary-down')).rejects.toMatchObject({ status: 503 });
  });
});

describe('ProviderSettingsSync', () => {
  const current = Buffer.from(Array.from({ length: 32 }, (_, i) => i * 3 + 5)).toString('base64');
  const previous = Buffer.from(Array.from({ length: 32 }, (_, i) => i * 5 + 2)).toString('base64');

  function stored(providerId: string, sealedWith: string, revision = 1): StoredProviderSettings {
    const { apiKey: _key, ...rest } = setting(providerId, { models: ['m'], revision });
    return { ...rest, apiKeyEnvelope: sealEventSecret(sealedWith, providerId, `sk-${providerId}`) };
  }

  it('opens keys sealed under the current or a previous master key, skips one it cannot open, and re-applies only on a change', async () => {
    let rows = [stored('rotated', previous), stored('foreign', Buffer.alloc(32, 1).toString('base64'))];
    let loads = 0;
    const errors: string[] = [];
    const router = createProviderRouter(started());
    routers.push(router);
    const reconfigure = router.reconfigure.bind(router);
    let applied = 0;
    router.reconfigure = async (config) => {
      applied += 1;
      await reconfigure(config);
    };
    let notified = 0;
    const sync = new ProviderSettingsSync({
      load: async () => {
        loads += 1;
        return rows;
      },
      router,
      base: started(),
      masterKeys: [current, previous],
      notify: async () => void (notified += 1),
      pollMs: 60_000,
      log: { info: () => undefined, warn: () => undefined, error: (fields) => errors.push((fields as { provider: string }).provider) },
    });
    await sync.start();
    sync.stop();
    expect(await text(router, 'rotated/m')).toBe('one two three');
    expect(sim.requests().find((r) => r.model === 'm')?.headers.authorization).toBe('Bearer sk-rotated');
    expect(router.resolve('foreign/m')).toBeUndefined();
    expect(errors).toEqual(['foreign']);

    await sync.refresh();
    expect([loads, applied]).toEqual([2, 1]);
    rows = [stored('rotated', current, 2)];
    await sync.changed();
    expect([loads, applied, notified]).toEqual([3, 2, 1]);
    expect(router.resolve('foreign/m')).toBeUndefined();
  });
});

describe('model discovery', () => {
  it('lists the models of Ollama and OpenAI-compatible servers, keeps a list when its server does not answer, and drops it when the provider moves', async () => {
    const base: ProvidersConfig = {
      providers: [
        { provider: 'openai', kind: 'openai', baseUrl: `${sim.url}/v1`, apiKey: 'sk-test' },
        { provider: 'ollama', kind: 'ollama', baseUrl: sim.url },
        { provider: 'vllm', kind: 'openai_compatible', baseUrl: `${sim.url}/v1` },
        // Nothing listens on port 1.
        { provider: 'down', kind: 'openai_compatible', baseUrl: 'http://127.0.0.1:1/v1' },
      ],
      deployments: [],
      aliases: [],
    };
    const router = createProviderRouter(base);
    routers.push(router);
    const ids = () => router.listModels().map((m) => m.id);
    expect(ids()).not.toContain('ollama/llama3.2:latest');

    const results = await router.discover();
    expect(results.find((r) => r.provider === 'ollama')?.models).toContain('llama3.2:latest');
    expect(results.find((r) => r.provider === 'vllm')?.models).toContain('sim-model-a');
    expect(results.find((r) => r.provider === 'down')?.error).toBeInstanceOf(Error);
    // The vendor's own endpoint is not asked: its catalogue is what is offered.
    expect(results.map((r) => r.provider).sort()).toEqual(['down', 'ollama', 'vllm']);
    expect(ids()).toEqual(expect.arrayContaining(['ollama/llama3.2:latest', 'ollama/sim-model-b:latest', 'vllm/sim-model-a', 'openai/gpt-4o-mini']));
    expect(ids()).not.toContain('openai/sim-model-a');
    expect(router.listModels().find((m) => m.id === 'ollama/llama3.2:latest')).toMatchObject({ provider: 'ollama', type: 'model' });

    // The server goes away: what it listed stays offered.
    const vllmGone = { ...base, providers: base.providers.map((p) => (p.provider === 'vllm' ? { ...p, apiKey: 'sk-rotated' } : p)) };
    await router.reconfigure(vllmGone);
    // A new key is another endpoint: its list is asked again before it is offered.
    expect(ids()).not.toContain('vllm/sim-model-a');
    await router.discover();
    expect(ids()).toContain('vllm/sim-model-a');
    const before = ids();
    await router.reconfigure({ ...vllmGone, providers: vllmGone.providers.map((p) => (p.provider === 'ollama' ? { ...p } : p)) });
    expect(ids()).toEqual(before);
  });
});
