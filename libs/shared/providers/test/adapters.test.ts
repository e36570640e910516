// Every adapter against the provider simulator over real HTTP: happy path, usage, images, every
// fault the simulator injects, and cancellation closing the upstream socket.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  startProviderSim,
  approxTokens,
  tokenize,
  type ProviderSim,
  type RequestRecord,
} from '@vivier/provider-sim';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createAnthropicProvider,
  createGeminiProvider,
  createOllamaProvider,
  createOpenAICompatibleProvider,
  createOpenAIProvider,
  createSimProvider,
  loadTokenizer,
  ProviderError,
  type ChatMessage,
  type ChatProvider,
  type ChatRequest,
  type StreamEvent,
} from '../src/index.js';

/** Echoed back word by word: short words, so one simulator chunk each. */
const COUNTING = 'one two three four five six seven eight nine ten eleven twelve';

// A 1×1 PNG.
const PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==';

let sim: ProviderSim;
const providers: Record<string, ChatProvider> = {};

interface Protocol {
  name: string;
  make(url: string): ChatProvider;
  /** Where the cap landed in the wire body. */
  cap(body: Record<string, unknown>): unknown;
  /** What the protocol-specific part of the request looked like. */
  checkRequest(rec: RequestRecord): void;
  /** Ollama asks for no key. */
  auth: boolean;
  /** Where the simulator found the image, and the media type the wire format declared. */
  image: { path: string; declaredType: string };
}

const body = (rec: RequestRecord) => rec.body as Record<string, unknown>;

const PROTOCOLS: Protocol[] = [
  {
    name: 'openai',
    make: (url) => createOpenAIProvider({ baseUrl: `${url}/v1`, apiKey: 'sk-test' }),
    cap: (b) => b.max_completion_tokens,
    checkRequest: (rec) => {
      expect(rec.headers.authorization).toBe('Bearer sk-test');
      expect(body(rec)).toMatchObject({ stream: true, stream_options: { include_usage: true } });
      expect((body(rec).messages as ChatMessage[]).map((m) => m.role)).toEqual([
        'system',
        'user',
        'assistant',
        'user',
      ]);
    },
    auth: true,
    image: { path: 'messages[0].content[1]', declaredType: 'image/png' },
  },
  {
    name: 'anthropic',
    make: (url) => createAnthropicProvider({ baseUrl: url, apiKey: 'sk-ant-test' }),
    cap: (b) => b.max_tokens,
    checkRequest: (rec) => {
      expect(rec.headers['x-api-key']).toBe('sk-ant-test');
      expect(rec.headers['anthropic-version']).toBe('2023-06-01');
      expect(body(rec)).toMatchObject({ stream: true, system: 'You are terse.', max_tokens: 4096 });
      expect((body(rec).messages as ChatMessage[]).map((m) => m.role)).toEqual(['user', 'assistant', 'user']);
    },
    auth: true,
    image: { path: 'messages[0].content[1]', declaredType: 'image/png' },
  },
  {
    name: 'gemini',
    make: (url) => createGeminiProvider({ baseUrl: url, apiKey: 'AIza-test' }),
    cap: (b) => (b.generationConfig as Record<string, unknown> | undefined)?.maxOutputTokens,
    checkRequest: (rec) => {
      expect(rec.headers['x-goog-api-key']).toBe('AIza-test');
      expect(rec.path).toMatch(/^\/v1beta\/models\/gemini-happy:streamGenerateContent/);
      expect(body(rec).systemInstruction).toEqual({ parts: [{ text: 'You are terse.' }] });
      expect((body(rec).contents as Array<{ role: string }>).map((c) => c.role)).toEqual([
        'user',
        'model',
        'user',
      ]);
    },
    auth: true,
    image: { path: 'contents[0].parts[1]', declaredType: 'image/png' },
  },
  {
    name: 'ollama',
    make: (url) => createOllamaProvider({ baseUrl: url }),
    cap: (b) => (b.options as Record<string, unknown> | undefined)?.num_predict,
    checkRequest: (rec) => {
      expect(body(rec)).toMatchObject({ stream: true });
      expect((body(rec).messages as ChatMessage[]).map((m) => m.role)).toEqual([
        'system',
        'user',
        'assistant',
        'user',
      ]);
    },
    auth: false,
    // Ollama carries bare base64 in `images`, with no media type.
    image: { path: 'messages[0].images[0]', declaredType: '' },
  },
  {
    name: 'compatible',
    make: (url) =>
      createOpenAICompatibleProvider({ provider: 'vllm', baseUrl: `${url}/v1`, apiKey: 'local' }),
    cap: (b) => b.max_tokens,
    checkRequest: (rec) =>
      expect(body(rec)).toMatchObject({ stream: true, stream_options: { include_usage: true } }),
    auth: true,
    image: { path: 'messages[0].content[1]', declaredType: 'image/png' },
  },
];

beforeAll(async () => {
  sim = await startProviderSim({ port: 0 });
  for (const p of PROTOCOLS) providers[p.name] = p.make(sim.url);
});

afterAll(async () => {
  await Promise.all(Object.values(providers).map((p) => p.close()));
  await sim.close();
});

function conversation(last: string): ChatMessage[] {
  return [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Hi.' },
    { role: 'assistant', content: 'Hello.' },
    { role: 'user', content: last },
  ];
}

interface Outcome {
  text: string;
  events: StreamEvent[];
  error?: ProviderError;
}

async function run(
  provider: ChatProvider,
  request: ChatRequest,
  options?: { idleTimeoutMs?: number },
): Promise<Outcome> {
  const out: Outcome = { text: '', events: [] };
  try {
    for await (const ev of provider.stream(request, options)) {
      out.events.push(ev);
      if (ev.type === 'delta') out.text += ev.text;
    }
  } catch (err) {
    if (!(err instanceof ProviderError)) throw err;
    out.error = err;
  }
  return out;
}

function lastRequest(model: string): RequestRecord {
  const recs = sim.requests().filter((r) => r.model === model);
  const rec = recs[recs.length - 1];
  if (!rec) throw new Error(`no request for ${model}`);
  return rec;
}

describe.each(PROTOCOLS)('$name adapter', (protocol) => {
  const provider = () => providers[protocol.name] as ChatProvider;
  const model = (what: string) => `${protocol.name}-${what}`;

  it('streams the reply with exact text and usage, in the protocol’s own request shape', async () => {
    const messages = conversation('echo: Hello there, world — ünïcödé ✓');
    const out = await run(provider(), { model: model('happy'), messages });
    expect(out.error).toBeUndefined();
    expect(out.text).toBe('Hello there, world — ünïcödé ✓');
    const chars = messages.reduce((n, m) => n + (m.content as string).length, 0);
    expect(out.events.slice(-2)).toEqual([
      { type: 'usage', promptTokens: approxTokens(chars, 0), completionTokens: tokenize(out.text).length },
      { type: 'finish', reason: 'stop' },
    ]);
    protocol.checkRequest(lastRequest(model('happy')));
  });

  it('sends maxTokens in the protocol’s field and reports finish "length"', async () => {
    const out = await run(provider(), {
      model: model('cap'),
      messages: [{ role: 'user', content: `echo: ${COUNTING}` }],
      maxTokens: 5,
    });
    expect(out.events.at(-1)).toEqual({ type: 'finish', reason: 'length' });
    expect(out.text).toBe('one two three four five');
    expect(protocol.cap(body(lastRequest(model('cap'))))).toBe(5);
  });

  it('passes images in the protocol’s format', async () => {
    const out = await run(provider(), {
      model: model('image'),
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'What is this?' },
            { type: 'image', mediaType: 'image/png', data: PNG },
          ],
        },
      ],
    });
    expect(out.text).toMatch(/^I received 1 image \(image\/png\)/);
    const [image] = lastRequest(model('image')).images;
    expect(image).toMatchObject({
      ...protocol.image,
      source: 'base64',
      detectedType: 'image/png',
      validBase64: true,
      bytes: 70,
    });
    expect(out.events.find((e) => e.type === 'usage')).toMatchObject({
      promptTokens: approxTokens('What is this?'.length, 1),
    });
  });

  it('maps 429 with Retry-After, 5xx, unknown models and bad keys onto typed errors', async () => {
    sim.setFaults({ status429: true, retryAfter: 3 }, model('429'));
    sim.setFaults({ status5xx: 503 }, model('503'));
    const msg: ChatMessage[] = [{ role: 'user', content: 'hi' }];
    const limited = await run(provider(), { model: model('429'), messages: msg });
    expect(limited.error).toMatchObject({
      kind: 'rate_limited',
      status: 429,
      retryAfterMs: 3000,
      retryable: true,
      beforeFirstToken: true,
    });
    const down = await run(provider(), { model: model('503'), messages: msg });
    expect(down.error).toMatchObject({
      kind: 'server',
      status: 503,
      retryable: true,
      beforeFirstToken: true,
    });
    const missing = await run(provider(), { model: 'missing-model', messages: msg });
    expect(missing.error).toMatchObject({ kind: 'not_found', status: 404, retryable: false });
    if (protocol.auth) {
      // The same endpoint with a key the simulator rejects.
      const invalid =
        protocol.name === 'anthropic'
          ? createAnthropicProvider({ baseUrl: sim.url, apiKey: 'invalid-key' })
          : protocol.name === 'gemini'
            ? createGeminiProvider({ baseUrl: sim.url, apiKey: 'invalid-key' })
            : createOpenAIProvider({ baseUrl: `${sim.url}/v1`, apiKey: 'invalid-key' });
      const denied = await run(invalid, { model: model('auth'), messages: msg });
      expect(denied.error).toMatchObject({ kind: 'auth', retryable: false });
      await invalid.close();
    }
  });

  it('delivers the partial text and ends with stream_cut when the connection is cut mid-stream', async () => {
    sim.setFaults({ cutAfterChunks: 3 }, model('cut'));
    const out = await run(provider(), {
      model: model('cut'),
      messages: [{ role: 'user', content: `echo: ${COUNTING}` }],
    });
    expect(out.error).toMatchObject({ kind: 'stream_cut', beforeFirstToken: false, retryable: true });
    expect(out.text).toBe('one two three');
    expect(out.events.some((e) => e.type === 'finish')).toBe(false);
  });

  it('turns an in-stream error event into a ProviderError after the text sent so far', async () => {
    sim.setFaults({ errorAfterChunks: 2 }, model('stream-error'));
    const out = await run(provider(), {
      model: model('stream-error'),
      messages: [{ role: 'user', content: `echo: ${COUNTING}` }],
    });
    expect(out.error).toMatchObject({ kind: 'server', beforeFirstToken: false });
    expect(out.text).toBe('one two');
  });
});

describe('timeouts and cancellation', () => {
  it('a stalled stream ends with a timeout after the idle limit, before or after the first token', async () => {
    const cases = PROTOCOLS.flatMap((p) => [
      { p, model: `${p.name}-stall-2`, after: 2 },
      { p, model: `${p.name}-stall-0`, after: 0 },
    ]);
    for (const c of cases) sim.setFaults({ stallAfterChunks: c.after }, c.model);
    const started = Date.now();
    const outs = await Promise.all(
      cases.map((c) =>
        run(
          providers[c.p.name] as ChatProvider,
          { model: c.model, messages: [{ role: 'user', content: `echo: ${COUNTING}` }] },
          { idleTimeoutMs: 300 },
        ),
      ),
    );
    outs.forEach((out, i) => {
      const c = cases[i]!;
      expect(out.error, c.model).toMatchObject({
        kind: 'timeout',
        retryable: true,
        beforeFirstToken: c.after === 0,
      });
      expect(out.text, c.model).toBe(c.after === 0 ? '' : 'one two');
    });
    // undici checks its idle timers about once a second.
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('an overall timeout ends a slow but steady stream', async () => {
    // Per-request simulator switches travel as headers, which deployments may set.
    const slow = createOpenAIProvider({
      baseUrl: `${sim.url}/v1`,
      apiKey: 'k',
      headers: { 'x-sim-tokens-per-second': '20', 'x-sim-reply-tokens': '60' },
    });
    const result: Outcome = { text: '', events: [] };
    try {
      for await (const ev of slow.stream(
        { model: 'slow-steady', messages: [{ role: 'user', content: 'hi' }] },
        { timeoutMs: 1000 }, // the first token well inside it even on a loaded machine; the stream takes 3 s
      ))
        if (ev.type === 'delta') result.text += ev.text;
    } catch (err) {
      result.error = err as ProviderError;
    }
    expect(result.error).toMatchObject({ kind: 'timeout', beforeFirstToken: false });
    expect(result.text.length).toBeGreaterThan(0);
    await slow.close();
  });

  it('aborting the signal closes the upstream connection at once (simulator abort stats), for every protocol', async () => {
    const results = await Promise.all(
      PROTOCOLS.map(async (p) => {
        const model = `${p.name}-abort`;
        sim.setFaults({ tokensPerSecond: 20, replyTokens: 200 }, model);
        const controller = new AbortController();
        let abortedAt = 0;
        let error: unknown;
        try {
          for await (const ev of (providers[p.name] as ChatProvider).stream({
            model,
            messages: [{ role: 'user', content: 'hi' }],
            signal: controller.signal,
          }))
            if (ev.type === 'delta' && abortedAt === 0) {
              abortedAt = Date.now();
              controller.abort();
            }
        } catch (err) {
          error = err;
        }
        const thrownAfter = Date.now() - abortedAt;
        return { model, abortedAt, error, thrownAfter };
      }),
    );
    const deadline = Date.now() + 1000;
    let aborts = sim.stats().aborts;
    while (Date.now() < deadline && !results.every((r) => aborts.some((a) => a.model === r.model))) {
      await new Promise((r) => setTimeout(r, 20));
      aborts = sim.stats().aborts;
    }
    for (const r of results) {
      expect(r.error, r.model).toMatchObject({ kind: 'cancelled', beforeFirstToken: false });
      expect(r.thrownAfter).toBeLessThan(200);
      const record = aborts.find((a) => a.model === r.model);
      expect(record, r.model).toBeDefined();
      expect(record!.abortedAt - r.abortedAt, r.model).toBeLessThan(1000);
      expect(record!.phase).toBe('streaming');
    }
  });

  it('a consumer that stops reading closes the upstream connection too', async () => {
    sim.setFaults({ tokensPerSecond: 20, replyTokens: 200 }, 'walk-away');
    const stoppedAt = Date.now();
    for await (const ev of providers.anthropic!.stream({
      model: 'walk-away',
      messages: [{ role: 'user', content: 'hi' }],
    }))
      if (ev.type === 'delta') break;
    const deadline = Date.now() + 1000;
    while (Date.now() < deadline && !sim.stats().aborts.some((a) => a.model === 'walk-away'))
      await new Promise((r) => setTimeout(r, 20));
    const record = sim.stats().aborts.find((a) => a.model === 'walk-away');
    expect(record).toBeDefined();
    expect(record!.abortedAt - stoppedAt).toBeLessThan(1000);
  });

  it('an already aborted signal sends nothing', async () => {
    const before = sim.stats().requests;
    const out = await run(providers.openai!, {
      model: 'never',
      messages: [{ role: 'user', content: 'hi' }],
      signal: AbortSignal.abort(),
    });
    expect(out.error).toMatchObject({ kind: 'cancelled', beforeFirstToken: true });
    expect(sim.stats().requests).toBe(before);
  });
});

describe('OpenAI-compatible server without usage', () => {
  it('counts usage with the tokenizer when the server reports none', async () => {
    const quiet = createOpenAICompatibleProvider({
      provider: 'lmstudio',
      baseUrl: `${sim.url}/v1`,
      apiKey: 'k',
      includeUsage: false,
    });
    const messages = conversation(
      'echo: Counting tokens locally, since this server reports no usage at all.',
    );
    const out = await run(quiet, { model: 'no-usage', messages });
    await quiet.close();
    expect(body(lastRequest('no-usage')).stream_options).toBeUndefined();
    const enc = await loadTokenizer('o200k_base');
    const count = (s: string) => enc.count(s);
    // OpenAI's chat framing: 4 tokens per message, 3 to prime the reply.
    const prompt = 3 + messages.reduce((n, m) => n + 4 + count(m.content as string), 0);
    expect(out.events.slice(-2)).toEqual([
      {
        type: 'usage',
        promptTokens: prompt,
        completionTokens: count('Counting tokens locally, since this server reports no usage at all.'),
      },
      { type: 'finish', reason: 'stop' },
    ]);
  });

  it("takes the caller's prompt count instead of tokenizing the prompt again, and only when the server reports none", async () => {
    const quiet = createOpenAICompatibleProvider({ provider: 'lmstudio', baseUrl: `${sim.url}/v1`, apiKey: 'k', includeUsage: false });
    const messages = conversation('echo: a counted prompt');
    const out = await run(quiet, { model: 'no-usage', messages, promptTokens: 4242 });
    await quiet.close();
    expect(out.events.at(-2)).toMatchObject({ type: 'usage', promptTokens: 4242 });
    // A server that reports usage is believed over the hint.
    const reporting = createOpenAICompatibleProvider({ provider: 'openai', baseUrl: `${sim.url}/v1`, apiKey: 'k' });
    const reported = await run(reporting, { model: 'gpt-4o-mini', messages, promptTokens: 4242 });
    await reporting.close();
    expect(reported.events.at(-2)).toMatchObject({ type: 'usage' });
    expect((reported.events.at(-2) as { promptTokens: number }).promptTokens).not.toBe(4242);
    // The built-in simulator too.
    const fast = createSimProvider({ tokensPerSecond: 0, firstTokenLatencyMs: 0 });
    expect((await fast.complete({ model: 'fast', messages, promptTokens: 4242 })).usage.promptTokens).toBe(4242);
  });
});

describe('built-in simulator provider', () => {
  it('streams deterministic text, echoes, counts usage with the tokenizer, and honours maxTokens', async () => {
    const fast = createSimProvider({ tokensPerSecond: 0, firstTokenLatencyMs: 0 });
    const request: ChatRequest = {
      model: 'fast',
      messages: [{ role: 'user', content: 'Tell me about rivers' }],
    };
    const a = await fast.complete(request);
    const b = await fast.complete(request);
    expect(a.text).toBe(b.text);
    expect(a.text.split(' ').length).toBeGreaterThanOrEqual(20);
    const enc = await loadTokenizer('o200k_base');
    expect(a.usage).toEqual({
      promptTokens: 3 + 4 + enc.count('Tell me about rivers'),
      completionTokens: enc.count(a.text),
    });
    expect(
      (await fast.complete({ model: 'smart', messages: [{ role: 'user', content: 'echo: exactly this' }] }))
        .text,
    ).toBe('exactly this');
    const capped = await fast.complete({ ...request, maxTokens: 3 });
    expect(capped.finishReason).toBe('length');
    expect(capped.text.split(' ')).toHaveLength(3);
  });

  it('paces tokens and waits for the first one as configured, and stops when aborted', async () => {
    const paced = createSimProvider({ tokensPerSecond: 100, firstTokenLatencyMs: 150 });
    const started = Date.now();
    const times: number[] = [];
    for await (const ev of paced.stream({
      model: 'fast',
      messages: [{ role: 'user', content: 'echo: one two three four five six' }],
    }))
      if (ev.type === 'delta') times.push(Date.now() - started);
    expect(times).toHaveLength(6);
    expect(times[0]).toBeGreaterThanOrEqual(140);
    expect(times[5]! - times[0]!).toBeGreaterThanOrEqual(45);

    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const out = await run(paced, {
      model: 'fast',
      messages: [{ role: 'user', content: 'hi' }],
      signal: controller.signal,
    });
    expect(out.error).toMatchObject({ kind: 'cancelled', beforeFirstToken: true });
  });
});

describe('servers that misbehave', () => {
  let server: Server;
  let base = '';
  const hits: string[] = [];
  /** Bytes the /flood/ server has handed to its socket, and whether its response was closed early. */
  const flood = { written: 0, closedEarly: false };
  const FLOOD_BYTES = 64 * 1024 * 1024;

  beforeAll(async () => {
    server = createServer((req, res) => {
      hits.push(req.url ?? '');
      if (req.url?.startsWith('/redirect/')) {
        res.writeHead(307, { location: `${sim.url}/v1/chat/completions` }).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (req.url?.startsWith('/flood/')) {
        // As fast as the connection takes it, honouring backpressure.
        const frame = `data: ${JSON.stringify({ choices: [{ delta: { content: 'x'.repeat(16 * 1024) } }] })}\n\n`;
        res.on('close', () => {
          if (!res.writableFinished) flood.closedEarly = true;
        });
        const pump = () => {
          while (flood.written < FLOOD_BYTES && !res.destroyed) {
            flood.written += frame.length;
            if (!res.write(frame)) return void res.once('drain', pump);
          }
          if (!res.destroyed) res.end('data: [DONE]\n\n');
        };
        pump();
        return;
      }
      if (req.url?.startsWith('/malformed/')) {
        res.end('data: {"choices":[{"delta":{"content":"ok"}}]}\n\ndata: {not json\n\n');
        return;
      }
      // CRLF framing, comments, an event split mid-line and a multi-byte character split
      // across writes: what real proxies and servers do.
      const euro = Buffer.from('€');
      const writes: Array<string | Buffer> = [
        ': hello\r\n\r\n',
        'data: {"choices":[{"delta":{"content":"price: "}}]}\r\n\r\ndata: {"choices":[{"delta":{"con',
        'tent":"5',
        Buffer.concat([Buffer.from(' '), euro.subarray(0, 1)]),
        Buffer.concat([euro.subarray(1), Buffer.from('"},"finish_reason":"stop"}]}\r\n\r\n')]),
        'data: [DONE]\r\n\r\n',
      ];
      let i = 0;
      const next = () => {
        if (i === writes.length) return void res.end();
        res.write(writes[i++]);
        setTimeout(next, 5);
      };
      next();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('reassembles events and characters split across network reads', async () => {
    const p = createOpenAICompatibleProvider({
      provider: 'odd',
      baseUrl: `${base}/split/v1`,
      includeUsage: false,
    });
    const out = await run(p, { model: 'm', messages: [{ role: 'user', content: 'hi' }] });
    await p.close();
    expect(out.error).toBeUndefined();
    expect(out.text).toBe('price: 5 €');
    expect(out.events.at(-1)).toEqual({ type: 'finish', reason: 'stop' });
  });

  it('a reader that falls behind pauses the provider’s connection instead of buffering its answer', async () => {
    const p = createOpenAICompatibleProvider({ provider: 'odd', baseUrl: `${base}/flood/v1`, includeUsage: false });
    const events = p.stream({ model: 'm', messages: [{ role: 'user', content: 'hi' }] })[Symbol.asyncIterator]();
    expect((await events.next()).value).toMatchObject({ type: 'delta' });
    // The reader stops here for a while: the server can only hand over what the socket buffers
    // and the answer's small queue hold, not the 64 MiB it is trying to send.
    await new Promise((r) => setTimeout(r, 500));
    expect(flood.written).toBeLessThan(FLOOD_BYTES / 2);
    await events.return?.(undefined);
    const deadline = Date.now() + 1000;
    while (!flood.closedEarly && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(flood.closedEarly).toBe(true);
    await p.close();
  });

  it('never follows a redirect', async () => {
    const before = sim.stats().requests;
    const p = createOpenAIProvider({ baseUrl: `${base}/redirect/v1`, apiKey: 'sk-test' });
    const out = await run(p, { model: 'm', messages: [{ role: 'user', content: 'hi' }] });
    await p.close();
    expect(out.error).toMatchObject({ kind: 'bad_request', status: 307, retryable: false });
    expect(out.error?.message).toMatch(/redirects are not followed/);
    expect(sim.stats().requests).toBe(before);
  });

  it('reports malformed stream data as a server error, after the text that was fine', async () => {
    const p = createOpenAICompatibleProvider({ provider: 'odd', baseUrl: `${base}/malformed/v1` });
    const out = await run(p, { model: 'm', messages: [{ role: 'user', content: 'hi' }] });
    await p.close();
    expect(out.text).toBe('ok');
    expect(out.error).toMatchObject({ kind: 'server', beforeFirstToken: false });
    expect(out.error?.message).toMatch(/malformed/);
  });
});
