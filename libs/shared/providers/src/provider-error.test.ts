import { describe, expect, it } from 'vitest';
import { errorFromResponse } from './http-transport';
import { ProviderError } from './types';

describe('what a provider failure tells users', () => {
  it("keeps the vendor's text in the message for the logs, and out of the public message but for a refused request", () => {
    const auth = errorFromResponse('openai', 401, {}, JSON.stringify({ error: { message: 'Incorrect API key provided: sk-proj-****abcd.' } }));
    expect(auth.kind).toBe('auth');
    expect(auth.message).toMatch(/sk-proj-\*\*\*\*abcd/);
    expect(auth.publicMessage).toBe("openai refused the platform's credentials (HTTP 401); an operator needs to check its API key.");

    const proxy = errorFromResponse('compat', 502, {}, '<html>Bad gateway at 10.0.3.7</html>');
    expect(proxy.message).toMatch(/10\.0\.3\.7/);
    expect(proxy.publicMessage).toBe('compat failed to answer (HTTP 502).');

    const refused = errorFromResponse('openai', 400, {}, JSON.stringify({ error: { message: "max_tokens is too large: 100000. This model supports at most 16384 completion tokens." } }));
    expect(refused.kind).toBe('bad_request');
    expect(refused.publicMessage).toBe('openai refused the request (HTTP 400): max_tokens is too large: 100000. This model supports at most 16384 completion tokens.');

    const unreachable = new ProviderError({ kind: 'connection', provider: 'ollama', message: 'cannot reach ollama: connect ECONNREFUSED 10.0.3.7:11434', beforeFirstToken: true });
    expect(unreachable.publicMessage).toBe('ollama cannot be reached.');
    expect(unreachable.with({ beforeFirstToken: false }).publicMessage).toBe('ollama cannot be reached.');
  });
});
