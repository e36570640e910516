import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startProviderSim, type ProviderSim, type RequestRecord, type SimStats } from './index.js';

// A 1x1 PNG and the first bytes of a JPEG, so the simulator's type sniffing has real magic numbers.
const PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';
const JPEG = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01]).toString(
  'base64',
);

let sim: ProviderSim;
let url: string;

beforeAll(async () => {
  sim = await startProviderSim({ port: 0 });
  url = sim.url;
});
afterAll(async () => {
  await sim.close();
});
beforeEach(() => {
  sim.resetFaults();
});

// ---------------------------------------------------------------------------------------------
// helpers

type Json = Record<string, unknown> & { [k: string]: any }; // eslint-disable-line @typescript-eslint/no-explicit-any

const OPENAI = { authorization: 'Bearer sk-test', 'content-type': 'application/json' };
const ANTHROPIC = {
  'x-api-key': 'sk-ant-test',
  'anthropic-version': '2023-06-01',
  'content-type': 'application/json',
};
const GEMINI = { 'x-goog-api-key': 'AIza-test', 'content-type': 'application/json' };
const JSONH = { 'content-type': 'application/json' };

function post(
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
  signal?: AbortSignal,
): Promise<Response> {
  return fetch(url + path, {
    method: 'POST',
    headers,
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal,
  });
}

interface SseEvent {
  event?: string;
  data: string;
}

/** A plain SSE parser (event/data fields, LF or CRLF framing), independent of the server code. */
function parseSse(text: string): SseEvent[] {
  return text
    .split(/\r?\n\r?\n/)
    .filter((b) => b.trim() !== '')
    .map((block) => {
      let event: string | undefined;
      const data: string[] = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      return { event, data: data.join('\n') };
    });
}

function ndjson(text: string): Json[] {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Json);
}

interface ReadResult {
  text: string;
  end: 'done' | 'idle' | 'error';
  error?: unknown;
}

/** Read a body until it ends, errors, or stays silent for idleMs (then cancel it, like a client timeout). */
async function readUntil(res: Response, idleMs: number): Promise<ReadResult> {
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let text = '';
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<'idle'>((r) => {
      timer = setTimeout(() => r('idle'), idleMs);
    });
    try {
      const r = await Promise.race([reader.read(), idle]);
      clearTimeout(timer);
      if (r === 'idle') {
        await reader.cancel().catch(() => undefined);
        return { text, end: 'idle' };
      }
      if (r.done) return { text, end: 'done' };
      text += dec.decode(r.value, { stream: true });
    } catch (error) {
      clearTimeout(timer);
      return { text, end: 'error', error };
    }
  }
}

async function getStats(): Promise<SimStats> {
  const r = await fetch(`${url}/_sim/stats`);
  return (await r.json()) as SimStats;
}

async function lastRequest(model: string): Promise<RequestRecord> {
  const r = await fetch(`${url}/_sim/requests?model=${encodeURIComponent(model)}&limit=1`);
  const { requests } = (await r.json()) as { requests: RequestRecord[] };
  return requests[0]!;
}

async function until<T>(fn: () => Promise<T | undefined>, ms = 3000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const chatBody = (model: string, content: string, extra: Json = {}): Json => ({
  model,
  messages: [{ role: 'user', content }],
  ...extra,
});

// ---------------------------------------------------------------------------------------------
// OpenAI

describe('OpenAI chat completions', () => {
  it('streams chat.completion.chunk objects, a usage chunk with empty choices, then [DONE]', async () => {
    const res = await post(
      '/v1/chat/completions',
      chatBody('gpt-4o-mini', 'echo: Hello there, general Kenobi!', {
        stream: true,
        stream_options: { include_usage: true },
      }),
      OPENAI,
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(res.headers.get('x-request-id')).toMatch(/^req_/);
    expect(res.headers.get('x-ratelimit-remaining-requests')).not.toBeNull();
    const events = parseSse(await res.text());
    expect(events.every((e) => e.event === undefined)).toBe(true);
    expect(events.at(-1)!.data).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data) as Json);

    const ids = new Set(chunks.map((c) => c.id));
    expect(ids.size).toBe(1);
    expect([...ids][0]).toMatch(/^chatcmpl-/);
    for (const c of chunks) {
      expect(c.object).toBe('chat.completion.chunk');
      expect(typeof c.created).toBe('number');
      expect(c.model).toBe('gpt-4o-mini');
      expect(typeof c.system_fingerprint).toBe('string');
      expect(c).toHaveProperty('usage');
    }
    const [first, ...rest] = chunks;
    expect(first!.choices).toEqual([
      {
        index: 0,
        delta: { role: 'assistant', content: '', refusal: null },
        logprobs: null,
        finish_reason: null,
      },
    ]);
    const usageChunk = rest.pop()!;
    const finishChunk = rest.pop()!;
    const content = rest;
    for (const c of content) {
      expect(c.usage).toBeNull();
      expect(c.choices).toHaveLength(1);
      expect(c.choices[0]).toEqual({
        index: 0,
        delta: { content: expect.any(String) },
        logprobs: null,
        finish_reason: null,
      });
    }
    expect(content.map((c) => c.choices[0].delta.content).join('')).toBe('Hello there, general Kenobi!');
    expect(finishChunk.choices).toEqual([{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }]);
    expect(finishChunk.usage).toBeNull();
    expect(usageChunk.choices).toEqual([]);
    expect(usageChunk.usage).toMatchObject({
      prompt_tokens: Math.ceil('echo: Hello there, general Kenobi!'.length / 4),
      completion_tokens: content.length,
      total_tokens: Math.ceil('echo: Hello there, general Kenobi!'.length / 4) + content.length,
    });
  });

  it('sends no usage field and no usage chunk without include_usage', async () => {
    const res = await post(
      '/v1/chat/completions',
      chatBody('gpt-4o-mini', 'write something', { stream: true }),
      OPENAI,
    );
    const events = parseSse(await res.text());
    expect(events.at(-1)!.data).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data) as Json);
    expect(chunks.every((c) => !('usage' in c))).toBe(true);
    expect(chunks.every((c) => (c.choices as unknown[]).length === 1)).toBe(true);
    expect(chunks.at(-1)!.choices[0].finish_reason).toBe('stop');
  });

  it('answers non-streaming requests with a chat.completion object', async () => {
    const res = await post('/v1/chat/completions', chatBody('gpt-4o', 'echo: just this'), OPENAI);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const body = (await res.json()) as Json;
    expect(body).toMatchObject({
      object: 'chat.completion',
      model: 'gpt-4o',
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: 'just this' },
          logprobs: null,
          finish_reason: 'stop',
        },
      ],
      usage: { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6 },
    });
    expect(body.id).toMatch(/^chatcmpl-/);
  });

  it('honours max_tokens and max_completion_tokens with finish_reason "length"', async () => {
    for (const key of ['max_tokens', 'max_completion_tokens']) {
      const res = await post(
        '/v1/chat/completions',
        chatBody('gpt-4o', 'tell me a long story', { [key]: 5 }),
        OPENAI,
      );
      const body = (await res.json()) as Json;
      expect(body.choices[0].finish_reason).toBe('length');
      expect(body.usage.completion_tokens).toBe(5);
    }
    const res = await post(
      '/v1/chat/completions',
      chatBody('gpt-4o', 'tell me a long story', { stream: true, max_tokens: 3 }),
      OPENAI,
    );
    const chunks = parseSse(await res.text())
      .filter((e) => e.data !== '[DONE]')
      .map((e) => JSON.parse(e.data) as Json);
    expect(
      chunks.filter(
        (c) => typeof c.choices[0]?.delta?.content === 'string' && c.choices[0].delta.content !== '',
      ),
    ).toHaveLength(3);
    expect(chunks.at(-1)!.choices[0].finish_reason).toBe('length');
  });

  it('rejects missing and invalid keys, unknown models and bad JSON in OpenAI error shape', async () => {
    const shape = {
      error: { message: expect.any(String), type: expect.any(String), param: null, code: expect.anything() },
    };
    let res = await post('/v1/chat/completions', chatBody('gpt-4o', 'hi'), JSONH);
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({
      error: { type: 'invalid_request_error', param: null, code: null },
    });
    res = await post('/v1/chat/completions', chatBody('gpt-4o', 'hi'), {
      ...OPENAI,
      authorization: 'Bearer invalid-key',
    });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ ...shape, error: { ...shape.error, code: 'invalid_api_key' } });
    res = await post('/v1/chat/completions', chatBody('missing-model', 'hi'), OPENAI);
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({
      error: { code: 'model_not_found', type: 'invalid_request_error' },
    });
    res = await post('/v1/chat/completions', '{"model":', OPENAI);
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { type: 'invalid_request_error' } });
  });

  it('lists models', async () => {
    const res = await fetch(`${url}/v1/models`, { headers: OPENAI });
    const body = (await res.json()) as Json;
    expect(body.object).toBe('list');
    expect(body.data[0]).toMatchObject({
      id: expect.any(String),
      object: 'model',
      owned_by: expect.any(String),
    });
  });

  it('records image_url content parts, data: URLs and remote URLs', async () => {
    await post(
      '/v1/chat/completions',
      {
        model: 'img-openai',
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'what is this?' },
              { type: 'image_url', image_url: { url: `data:image/png;base64,${PNG}`, detail: 'low' } },
              { type: 'image_url', image_url: { url: 'https://example.com/cat.jpg' } },
            ],
          },
        ],
      },
      OPENAI,
    ).then((r) => r.json());
    const rec = await lastRequest('img-openai');
    expect(rec.images).toEqual([
      expect.objectContaining({
        protocol: 'openai',
        source: 'base64',
        declaredType: 'image/png',
        detectedType: 'image/png',
        bytes: 70,
        validBase64: true,
        path: 'messages[0].content[1]',
      }),
      expect.objectContaining({ source: 'url', url: 'https://example.com/cat.jpg' }),
    ]);
    expect(rec.headers.authorization).toBe('Bearer sk-test');
    expect((rec.body as Json).messages[0].content[0].text).toBe('what is this?');
  });

  it('streams the Responses API with ordered, sequence-numbered events', async () => {
    const res = await post(
      '/v1/responses',
      { model: 'gpt-4o', input: 'echo: one two three', stream: true },
      OPENAI,
    );
    const events = parseSse(await res.text());
    const types = events.map((e) => e.event);
    expect(types.slice(0, 4)).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
    ]);
    expect(types.slice(-4)).toEqual([
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.completed',
    ]);
    const data = events.map((e) => JSON.parse(e.data) as Json);
    data.forEach((d, i) => {
      expect(d.type).toBe(events[i]!.event);
      expect(d.sequence_number).toBe(i);
    });
    const deltas = data.filter((d) => d.type === 'response.output_text.delta');
    expect(deltas.map((d) => d.delta).join('')).toBe('one two three');
    const completed = data.at(-1)!;
    expect(completed.response).toMatchObject({
      status: 'completed',
      usage: { output_tokens: deltas.length },
    });
    expect(completed.response.output[0].content[0].text).toBe('one two three');
  });
});

// ---------------------------------------------------------------------------------------------
// Anthropic

describe('Anthropic messages', () => {
  it('streams the documented event sequence with text_delta and cumulative usage', async () => {
    const res = await post(
      '/v1/messages',
      {
        model: 'claude-sonnet-4-5',
        max_tokens: 256,
        stream: true,
        system: 'be brief',
        messages: [{ role: 'user', content: 'echo: Hi from the test' }],
      },
      ANTHROPIC,
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(res.headers.get('request-id')).toMatch(/^req_/);
    const events = parseSse(await res.text());
    const names = events.map((e) => e.event);
    const deltas = names.filter((n) => n === 'content_block_delta').length;
    expect(names).toEqual([
      'message_start',
      'content_block_start',
      'ping',
      ...Array<string>(deltas).fill('content_block_delta'),
      'content_block_stop',
      'message_delta',
      'message_stop',
    ]);
    const data = events.map((e) => JSON.parse(e.data) as Json);
    data.forEach((d, i) => expect(d.type).toBe(names[i]));
    expect(data[0]!.message).toMatchObject({
      type: 'message',
      role: 'assistant',
      model: 'claude-sonnet-4-5',
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { input_tokens: Math.ceil(('be brief'.length + 'echo: Hi from the test'.length) / 4) },
    });
    expect(data[0]!.message.id).toMatch(/^msg_/);
    expect(data[1]).toEqual({
      type: 'content_block_start',
      index: 0,
      content_block: { type: 'text', text: '' },
    });
    const text = data
      .filter((d) => d.type === 'content_block_delta')
      .map((d) => {
        expect(d.index).toBe(0);
        expect(d.delta.type).toBe('text_delta');
        return d.delta.text as string;
      });
    expect(text.join('')).toBe('Hi from the test');
    expect(data.at(-2)).toEqual({
      type: 'message_delta',
      delta: { stop_reason: 'end_turn', stop_sequence: null },
      usage: { output_tokens: deltas },
    });
    expect(data.at(-1)).toEqual({ type: 'message_stop' });
  });

  it('answers non-streaming requests with a message object and stops at max_tokens', async () => {
    let res = await post(
      '/v1/messages',
      {
        model: 'claude-3-5-haiku-latest',
        max_tokens: 100,
        messages: [{ role: 'user', content: 'echo: ok then' }],
      },
      ANTHROPIC,
    );
    expect(await res.json()).toMatchObject({
      type: 'message',
      role: 'assistant',
      content: [{ type: 'text', text: 'ok then' }],
      stop_reason: 'end_turn',
      stop_sequence: null,
      usage: { input_tokens: 4, output_tokens: 2 },
    });
    res = await post(
      '/v1/messages',
      { model: 'c', max_tokens: 4, messages: [{ role: 'user', content: 'a long story please' }] },
      ANTHROPIC,
    );
    expect(await res.json()).toMatchObject({ stop_reason: 'max_tokens', usage: { output_tokens: 4 } });
  });

  it('requires a key (x-api-key or Bearer), anthropic-version and max_tokens', async () => {
    const body = { model: 'c', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] };
    let res = await post('/v1/messages', body, { 'anthropic-version': '2023-06-01' });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({
      type: 'error',
      error: { type: 'authentication_error', message: expect.any(String) },
      request_id: expect.any(String),
    });
    res = await post('/v1/messages', body, {
      authorization: 'Bearer sk-ant',
      'anthropic-version': '2023-06-01',
    });
    expect(res.status).toBe(200);
    await res.text();
    res = await post('/v1/messages', body, { 'x-api-key': 'k' });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      type: 'error',
      error: { type: 'invalid_request_error', message: 'anthropic-version: header is required' },
    });
    res = await post('/v1/messages', { ...body, max_tokens: undefined }, ANTHROPIC);
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      error: { type: 'invalid_request_error', message: 'max_tokens: Field required' },
    });
  });

  it('records base64 image blocks', async () => {
    await post(
      '/v1/messages',
      {
        model: 'img-anthropic',
        max_tokens: 50,
        messages: [
          {
            role: 'user',
            content: [
              { type: 'image', source: { type: 'base64', media_type: 'image/jpeg', data: JPEG } },
              { type: 'text', text: 'describe' },
            ],
          },
        ],
      },
      ANTHROPIC,
    ).then((r) => r.json());
    const rec = await lastRequest('img-anthropic');
    expect(rec.images).toEqual([
      expect.objectContaining({
        protocol: 'anthropic',
        source: 'base64',
        declaredType: 'image/jpeg',
        detectedType: 'image/jpeg',
        bytes: 12,
        path: 'messages[0].content[0]',
      }),
    ]);
  });
});

// ---------------------------------------------------------------------------------------------
// Gemini

describe('Gemini generateContent', () => {
  it('streams GenerateContentResponse objects over SSE (?alt=sse), CRLF framed, with usageMetadata', async () => {
    const res = await post(
      '/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse',
      { contents: [{ role: 'user', parts: [{ text: 'echo: Sky is blue' }] }] },
      GEMINI,
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const raw = await res.text();
    expect(raw.endsWith('\r\n\r\n')).toBe(true);
    expect(raw).not.toContain('[DONE]');
    const events = parseSse(raw);
    expect(events.every((e) => e.event === undefined)).toBe(true);
    const data = events.map((e) => JSON.parse(e.data) as Json);
    const prompt = Math.ceil('echo: Sky is blue'.length / 4);
    data.forEach((d, i) => {
      expect(d.candidates).toHaveLength(1);
      expect(d.candidates[0].content.role).toBe('model');
      expect(d.candidates[0].index).toBe(0);
      expect(d.modelVersion).toBe('gemini-2.0-flash');
      expect(typeof d.responseId).toBe('string');
      const u = d.usageMetadata;
      expect(u.promptTokenCount).toBe(prompt);
      expect(u.totalTokenCount).toBe(u.promptTokenCount + u.candidatesTokenCount);
      if (i < data.length - 1) {
        expect(d.candidates[0].finishReason).toBeUndefined();
        expect(u.candidatesTokenCount).toBe(i + 1);
      }
    });
    const last = data.at(-1)!;
    expect(last.candidates[0].finishReason).toBe('STOP');
    expect(last.usageMetadata.candidatesTokenCount).toBe(data.length - 1);
    expect(data.map((d) => d.candidates[0].content.parts.map((p: Json) => p.text).join('')).join('')).toBe(
      'Sky is blue',
    );
  });

  it('answers :generateContent in one object and stops at maxOutputTokens', async () => {
    let res = await post(
      '/v1beta/models/gemini-2.5-flash:generateContent',
      { contents: [{ parts: [{ text: 'echo: fine' }] }] },
      GEMINI,
    );
    expect(await res.json()).toMatchObject({
      candidates: [{ content: { parts: [{ text: 'fine' }], role: 'model' }, finishReason: 'STOP', index: 0 }],
      usageMetadata: { promptTokenCount: 3, candidatesTokenCount: 1, totalTokenCount: 4 },
      modelVersion: 'gemini-2.5-flash',
    });
    res = await post(
      '/v1beta/models/g:generateContent',
      { contents: [{ parts: [{ text: 'story' }] }], generationConfig: { maxOutputTokens: 2 } },
      GEMINI,
    );
    expect(await res.json()).toMatchObject({
      candidates: [{ finishReason: 'MAX_TOKENS' }],
      usageMetadata: { candidatesTokenCount: 2 },
    });
  });

  it('streams a JSON array without alt=sse', async () => {
    const res = await post(
      '/v1beta/models/g:streamGenerateContent',
      { contents: [{ parts: [{ text: 'echo: a b c' }] }] },
      GEMINI,
    );
    const arr = JSON.parse(await res.text()) as Json[];
    expect(arr).toHaveLength(4);
    expect(arr.at(-1)!.candidates[0].finishReason).toBe('STOP');
  });

  it('takes the key from x-goog-api-key or ?key= and answers auth errors in Google shape', async () => {
    const body = { contents: [{ parts: [{ text: 'hi' }] }] };
    let res = await post('/v1beta/models/g:generateContent?key=AIza-query', body, JSONH);
    expect(res.status).toBe(200);
    await res.text();
    res = await post('/v1beta/models/g:generateContent', body, JSONH);
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({
      error: { code: 403, message: expect.any(String), status: 'PERMISSION_DENIED' },
    });
    res = await post('/v1beta/models/g:generateContent', body, { 'x-goog-api-key': 'invalid' });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      error: {
        code: 400,
        status: 'INVALID_ARGUMENT',
        message: 'API key not valid. Please pass a valid API key.',
      },
    });
    res = await post('/v1beta/models/missing-x:generateContent', body, GEMINI);
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ error: { code: 404, status: 'NOT_FOUND' } });
  });

  it('records inline_data and inlineData parts', async () => {
    await post(
      '/v1beta/models/img-gemini:generateContent',
      {
        contents: [
          {
            role: 'user',
            parts: [
              { text: 'two pictures' },
              { inline_data: { mime_type: 'image/png', data: PNG } },
              { inlineData: { mimeType: 'image/jpeg', data: JPEG } },
            ],
          },
        ],
      },
      GEMINI,
    ).then((r) => r.json());
    const rec = await lastRequest('img-gemini');
    expect(rec.images.map((i) => [i.protocol, i.declaredType, i.detectedType, i.path])).toEqual([
      ['gemini', 'image/png', 'image/png', 'contents[0].parts[1]'],
      ['gemini', 'image/jpeg', 'image/jpeg', 'contents[0].parts[2]'],
    ]);
  });
});

// ---------------------------------------------------------------------------------------------
// Ollama

describe('Ollama /api/chat', () => {
  it('streams NDJSON and ends with a done object carrying the counters', async () => {
    const res = await post('/api/chat', {
      model: 'llama3.2',
      messages: [{ role: 'user', content: 'echo: why is the sky blue?' }],
    });
    expect(res.headers.get('content-type')).toBe('application/x-ndjson');
    const lines = ndjson(await res.text());
    const body = lines.slice(0, -1);
    const final = lines.at(-1)!;
    for (const l of body) {
      expect(Object.keys(l)).toEqual(['model', 'created_at', 'message', 'done']);
      expect(l.model).toBe('llama3.2');
      expect(Number.isNaN(Date.parse(l.created_at))).toBe(false);
      expect(l.message.role).toBe('assistant');
      expect(l.done).toBe(false);
    }
    expect(body.map((l) => l.message.content).join('')).toBe('why is the sky blue?');
    expect(final).toMatchObject({
      model: 'llama3.2',
      message: { role: 'assistant', content: '' },
      done: true,
      done_reason: 'stop',
      prompt_eval_count: Math.ceil('echo: why is the sky blue?'.length / 4),
      eval_count: body.length,
    });
    for (const k of ['total_duration', 'load_duration', 'prompt_eval_duration', 'eval_duration']) {
      expect(Number.isInteger(final[k]) && (final[k] as number) > 0).toBe(true);
    }
  });

  it('answers stream:false with one object and honours options.num_predict', async () => {
    let res = await post('/api/chat', {
      model: 'llama3.2',
      stream: false,
      messages: [{ role: 'user', content: 'echo: single' }],
    });
    expect(await res.json()).toMatchObject({
      message: { role: 'assistant', content: 'single' },
      done: true,
      done_reason: 'stop',
      eval_count: 1,
    });
    res = await post('/api/chat', {
      model: 'llama3.2',
      stream: false,
      options: { num_predict: 3 },
      messages: [{ role: 'user', content: 'story' }],
    });
    expect(await res.json()).toMatchObject({ done_reason: 'length', eval_count: 3 });
  });

  it('records images and lists tags', async () => {
    await post('/api/chat', {
      model: 'img-ollama',
      stream: false,
      messages: [{ role: 'user', content: 'look', images: [PNG] }],
    }).then((r) => r.json());
    const rec = await lastRequest('img-ollama');
    expect(rec.images).toEqual([
      expect.objectContaining({
        protocol: 'ollama',
        detectedType: 'image/png',
        declaredType: '',
        path: 'messages[0].images[0]',
      }),
    ]);
    const tags = (await (await fetch(`${url}/api/tags`)).json()) as Json;
    expect(tags.models[0]).toMatchObject({
      name: expect.any(String),
      model: expect.any(String),
      digest: expect.any(String),
      details: { format: 'gguf' },
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Faults

describe('faults', () => {
  it('answers 429 with Retry-After and the vendor rate-limit headers, per request', async () => {
    let res = await post('/v1/chat/completions', chatBody('m', 'hi'), {
      ...OPENAI,
      'x-sim-status-429': '1',
      'x-sim-retry-after': '7',
    });
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('7');
    expect(res.headers.get('x-ratelimit-remaining-requests')).toBe('0');
    expect(res.headers.get('x-ratelimit-reset-requests')).toBe('7s');
    expect(await res.json()).toMatchObject({ error: { code: 'rate_limit_exceeded', param: null } });

    res = await post(
      '/v1/messages',
      { model: 'c', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] },
      { ...ANTHROPIC, 'x-sim-status-429': 'true' },
    );
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(res.headers.get('anthropic-ratelimit-requests-remaining')).toBe('0');
    expect(Date.parse(res.headers.get('anthropic-ratelimit-requests-reset')!)).toBeGreaterThan(
      Date.now() - 1000,
    );
    expect(await res.json()).toMatchObject({ type: 'error', error: { type: 'rate_limit_error' } });

    res = await post(
      '/v1beta/models/g:streamGenerateContent?alt=sse',
      { contents: [{ parts: [{ text: 'x' }] }] },
      { ...GEMINI, 'x-sim-status-429': '1', 'x-sim-retry-after': '2' },
    );
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('2');
    expect(await res.json()).toMatchObject({
      error: { code: 429, status: 'RESOURCE_EXHAUSTED', details: [{ retryDelay: '2s' }] },
    });

    res = await post('/api/chat', chatBody('llama3.2', 'x'), { 'x-sim-status-429': '1' });
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(await res.json()).toEqual({ error: expect.any(String) });
  });

  it('answers 5xx in each vendor shape', async () => {
    let res = await post('/v1/chat/completions', chatBody('m', 'hi', { stream: true }), {
      ...OPENAI,
      'x-sim-status-5xx': '503',
    });
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ error: { type: 'server_error' } });
    res = await post(
      '/v1/messages',
      { model: 'c', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] },
      { ...ANTHROPIC, 'x-sim-status-5xx': '529' },
    );
    expect(res.status).toBe(529);
    expect(await res.json()).toMatchObject({
      type: 'error',
      error: { type: 'overloaded_error', message: 'Overloaded' },
    });
    res = await post(
      '/v1beta/models/g:generateContent',
      { contents: [{ parts: [{ text: 'x' }] }] },
      { ...GEMINI, 'x-sim-status-5xx': '500' },
    );
    expect(res.status).toBe(500);
    expect(await res.json()).toMatchObject({ error: { code: 500, status: 'INTERNAL' } });
    res = await post('/api/chat', chatBody('llama3.2', 'x'), { 'x-sim-status-5xx': '502' });
    expect(res.status).toBe(502);
    expect(await res.json()).toEqual({ error: expect.any(String) });
  });

  it('fails only the first N requests (failTimes), via the control API and via headers', async () => {
    const model = 'retry-model';
    const r = await post('/_sim/faults', { model, status5xx: 503, failTimes: 2 }, JSONH);
    expect(r.status).toBe(200);
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await post('/v1/chat/completions', chatBody(model, 'hi'), OPENAI);
      statuses.push(res.status);
      await res.text();
    }
    expect(statuses).toEqual([503, 503, 200, 200]);

    const hdr = {
      ...OPENAI,
      'x-sim-status-429': '1',
      'x-sim-fail-times': '1',
      'x-sim-fault-key': `k-${Date.now()}`,
    };
    const a = await post('/v1/chat/completions', chatBody('hdr-model', 'hi'), hdr);
    const b = await post('/v1/chat/completions', chatBody('hdr-model', 'hi'), hdr);
    expect([a.status, b.status]).toEqual([429, 200]);
    await Promise.all([a.text(), b.text()]);
  });

  it('scopes faults to a model: model-a fails while model-b succeeds', async () => {
    sim.setFaults({ status5xx: 500 }, 'model-a');
    const [a, b] = await Promise.all([
      post('/v1/chat/completions', chatBody('model-a', 'hi'), OPENAI),
      post('/v1/chat/completions', chatBody('model-b', 'hi'), OPENAI),
    ]);
    expect(a.status).toBe(500);
    expect(b.status).toBe(200);
    await Promise.all([a.text(), b.text()]);
    const faults = (await (await fetch(`${url}/_sim/faults`)).json()) as Json;
    expect(faults.models['model-a']).toEqual({ status5xx: 500 });
    await fetch(`${url}/_sim/faults?model=model-a`, { method: 'DELETE' });
    const again = await post('/v1/chat/completions', chatBody('model-a', 'hi'), OPENAI);
    expect(again.status).toBe(200);
    await again.text();
  });

  it('lets a request header override a global fault, and keeps parallel requests apart', async () => {
    sim.setFaults({ status5xx: 502 });
    const [plain, off, other] = await Promise.all([
      post('/api/chat', chatBody('llama3.2', 'x', { stream: false })),
      post('/api/chat', chatBody('llama3.2', 'x', { stream: false }), { 'x-sim-status-5xx': '0' }),
      post('/api/chat', chatBody('llama3.2', 'x', { stream: false }), { 'x-sim-status-429': '1' }),
    ]);
    expect([plain.status, off.status, other.status]).toEqual([502, 200, 429]);
    await Promise.all([plain.text(), off.text(), other.text()]);
  });

  it('waits latencyMs before the first byte', async () => {
    const t0 = performance.now();
    const res = await post('/v1/chat/completions', chatBody('m', 'hi', { stream: true }), {
      ...OPENAI,
      'x-sim-latency-ms': '250',
    });
    const ttfb = performance.now() - t0;
    await res.text();
    expect(ttfb).toBeGreaterThanOrEqual(240);
    expect(ttfb).toBeLessThan(1500);
  });

  it('paces token chunks at tokensPerSecond', async () => {
    const t0 = performance.now();
    const res = await post('/api/chat', chatBody('llama3.2', 'echo: a b c d e f g h i j'), {
      'x-sim-tokens-per-second': '50',
    });
    const reader = res.body!.getReader();
    const arrivals: number[] = [];
    for (;;) {
      const { done } = await reader.read();
      if (done) break;
      arrivals.push(performance.now() - t0);
    }
    const total = performance.now() - t0;
    // 10 tokens at 50/s: the first immediately, the last 9 x 20 ms later.
    expect(total).toBeGreaterThanOrEqual(170);
    expect(total).toBeLessThan(1500);
    expect(arrivals.length).toBeGreaterThanOrEqual(5);
  });

  it('stalls after N chunks with the connection open; a client timeout detects it and is recorded as an abort', async () => {
    const model = 'stall-model';
    const res = await post(
      '/v1/chat/completions',
      chatBody(model, 'echo: one two three four five', { stream: true }),
      { ...OPENAI, 'x-sim-stall-after-chunks': '2' },
    );
    const r = await readUntil(res, 300);
    expect(r.end).toBe('idle');
    const chunks = parseSse(r.text).map((e) => JSON.parse(e.data) as Json);
    // role chunk + 2 token chunks, nothing after.
    expect(chunks.map((c) => c.choices[0].delta.content)).toEqual(['', 'one', ' two']);
    const rec = await until(async () => {
      const x = await lastRequest(model);
      return x.outcome === 'aborted' ? x : undefined;
    });
    expect(rec.fault).toBe('stall');
    expect(rec.chunksSent).toBe(2);
    const stats = await getStats();
    expect(stats.aborts.find((a) => a.requestId === rec.id)).toMatchObject({
      phase: 'stalled',
      chunksSent: 2,
    });
  });

  it('stalls a non-streaming request without answering at all', async () => {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), 300);
    await expect(
      post(
        '/v1/messages',
        { model: 'c', max_tokens: 9, messages: [{ role: 'user', content: 'x' }] },
        { ...ANTHROPIC, 'x-sim-stall-after-chunks': '0' },
        ctrl.signal,
      ),
    ).rejects.toThrow();
    clearTimeout(timer);
  });

  it('cuts the stream after N chunks: the client sees a premature end, not a clean finish', async () => {
    const model = 'cut-model';
    const before = await getStats();
    const res = await post(
      '/v1/messages',
      {
        model,
        max_tokens: 99,
        stream: true,
        messages: [{ role: 'user', content: 'echo: one two three four five' }],
      },
      { ...ANTHROPIC, 'x-sim-cut-after-chunks': '3' },
    );
    const r = await readUntil(res, 2000);
    expect(r.end).toBe('error');
    const names = parseSse(r.text).map((e) => e.event);
    expect(names).toEqual([
      'message_start',
      'content_block_start',
      'ping',
      'content_block_delta',
      'content_block_delta',
      'content_block_delta',
    ]);
    const rec = await until(async () => {
      const x = await lastRequest(model);
      return x.outcome === 'cut' ? x : undefined;
    });
    expect(rec.chunksSent).toBe(3);
    const after = await getStats();
    expect(after.cut).toBe(before.cut + 1);
    expect(after.aborted).toBe(before.aborted);
  });

  it('cuts Ollama and Gemini streams the same way', async () => {
    let res = await post('/api/chat', chatBody('llama3.2', 'echo: one two three'), {
      'x-sim-cut-after-chunks': '1',
    });
    let r = await readUntil(res, 2000);
    expect(r.end).toBe('error');
    expect(ndjson(r.text)).toHaveLength(1);
    res = await post(
      '/v1beta/models/g:streamGenerateContent?alt=sse',
      { contents: [{ parts: [{ text: 'echo: one two three' }] }] },
      { ...GEMINI, 'x-sim-cut-after-chunks': '2' },
    );
    r = await readUntil(res, 2000);
    expect(r.end).toBe('error');
    expect(parseSse(r.text)).toHaveLength(2);
  });

  it('sends the vendor in-stream error after N chunks (errorAfterChunks)', async () => {
    let res = await post(
      '/v1/messages',
      { model: 'c', max_tokens: 99, stream: true, messages: [{ role: 'user', content: 'echo: a b c' }] },
      { ...ANTHROPIC, 'x-sim-error-after-chunks': '2' },
    );
    let events = parseSse(await res.text());
    expect(events.map((e) => e.event).slice(-3)).toEqual([
      'content_block_delta',
      'content_block_delta',
      'error',
    ]);
    expect(JSON.parse(events.at(-1)!.data)).toEqual({
      type: 'error',
      error: { type: 'overloaded_error', message: 'Overloaded' },
    });
    res = await post('/v1/chat/completions', chatBody('m', 'echo: a b c', { stream: true }), {
      ...OPENAI,
      'x-sim-error-after-chunks': '1',
    });
    events = parseSse(await res.text());
    expect(events.at(-1)!.data).not.toBe('[DONE]');
    expect(JSON.parse(events.at(-1)!.data)).toMatchObject({ error: { type: 'server_error' } });
  });

  it('records a client abort mid-stream within a second, with its timestamp', async () => {
    const model = 'abort-model';
    const ctrl = new AbortController();
    const res = await post(
      '/v1/chat/completions',
      chatBody(model, 'a long answer please', { stream: true }),
      { ...OPENAI, 'x-sim-tokens-per-second': '20', 'x-sim-reply-tokens': '200' },
      ctrl.signal,
    );
    const reader = res.body!.getReader();
    await reader.read();
    const abortedAt = Date.now();
    ctrl.abort();
    const stats = await until(async () => {
      const s = await getStats();
      return s.aborts.some((a) => a.model === model) ? s : undefined;
    });
    const rec = stats.aborts.find((a) => a.model === model)!;
    expect(rec.phase).toBe('streaming');
    expect(rec.abortedAt - abortedAt).toBeLessThan(1000);
    expect(rec.abortedAt).toBeGreaterThanOrEqual(rec.startedAt);
    expect(rec.chunksSent).toBeLessThan(200);
    const logged = await lastRequest(model);
    expect(logged.outcome).toBe('aborted');
    expect(logged.abortedAt).toBe(rec.abortedAt);
  });

  it('records an abort during the latency wait', async () => {
    const model = 'abort-latency';
    const ctrl = new AbortController();
    const p = post('/api/chat', chatBody(model, 'x'), { 'x-sim-latency-ms': '5000' }, ctrl.signal).catch(
      () => undefined,
    );
    await until(async () => ((await lastRequest(model)) ? true : undefined));
    ctrl.abort();
    await p;
    const s = await until(async () => {
      const st = await getStats();
      return st.aborts.find((a) => a.model === model);
    });
    expect(s.phase).toBe('latency');
  });

  it('caps replies with maxTokens and sets exact lengths with replyTokens', async () => {
    sim.setFaults({ maxTokens: 4 }, 'capped');
    let res = await post('/v1/chat/completions', chatBody('capped', 'story'), OPENAI);
    let body = (await res.json()) as Json;
    expect(body.choices[0].finish_reason).toBe('length');
    expect(body.usage.completion_tokens).toBe(4);
    res = await post('/v1/chat/completions', chatBody('m', 'story'), {
      ...OPENAI,
      'x-sim-reply-tokens': '17',
    });
    body = (await res.json()) as Json;
    expect(body.choices[0].finish_reason).toBe('stop');
    expect(body.usage.completion_tokens).toBe(17);
  });

  it('rejects malformed switches', async () => {
    let res = await post('/v1/chat/completions', chatBody('m', 'hi'), {
      ...OPENAI,
      'x-sim-status-5xx': '418',
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as Json).error.message).toMatch(/x-sim-status-5xx/);
    res = await post('/_sim/faults', { latencyMs: -3 }, JSONH);
    expect(res.status).toBe(400);
    res = await post('/_sim/faults', { bogus: 1 }, JSONH);
    expect(res.status).toBe(400);
    expect(() => sim.setFaults({ latencyMs: Number.NaN })).toThrow();
  });

  it('accepts every switch at once as JSON in x-sim-faults', async () => {
    const res = await post('/v1/chat/completions', chatBody('m', 'hi'), {
      ...OPENAI,
      'x-sim-faults': JSON.stringify({ status429: true, retryAfter: 4 }),
    });
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('4');
    await res.text();
  });
});

// ---------------------------------------------------------------------------------------------
// Replies, stats, CLI, speed

describe('simulator', () => {
  it('replies deterministically from the prompt, and differently for another prompt', async () => {
    const ask = async (content: string): Promise<string> => {
      const res = await post('/v1/chat/completions', chatBody('gpt-4o', content), OPENAI);
      return ((await res.json()) as Json).choices[0].message.content as string;
    };
    const a1 = await ask('What is a queue?');
    const a2 = await ask('What is a queue?');
    const b = await ask('What is a stack?');
    expect(a1).toBe(a2);
    expect(a1).not.toBe(b);
    expect(a1).toMatch(/^[A-Z].*\.$/);
  });

  it('names received images in generated replies', async () => {
    const res = await post('/api/chat', {
      model: 'llama3.2',
      stream: false,
      messages: [{ role: 'user', content: 'what is this', images: [PNG] }],
    });
    expect(((await res.json()) as Json).message.content).toMatch(/^I received 1 image \(image\/png\)\. /);
  });

  it('counts requests per route, model and status', async () => {
    sim.resetStats();
    await (await post('/v1/chat/completions', chatBody('count-a', 'hi'), OPENAI)).text();
    await (await post('/api/chat', chatBody('count-b', 'hi', { stream: false }))).text();
    await (
      await post('/api/chat', chatBody('count-b', 'hi', { stream: false }), { 'x-sim-status-5xx': '500' })
    ).text();
    const s = sim.stats();
    expect(s.requests).toBe(3);
    expect(s.byRoute).toEqual({ 'openai.chat': 1, 'ollama.chat': 2 });
    expect(s.byModel).toEqual({ 'count-a': 1, 'count-b': 2 });
    expect(s.byStatus).toEqual({ '200': 2, '500': 1 });
    expect(s.completed).toBe(2);
    expect(s.injected.status5xx).toBe(1);
    expect(s.inFlight).toBe(0);
    expect(sim.requests()).toHaveLength(3);
  });

  it('serves many concurrent requests quickly over keep-alive', async () => {
    const n = 300;
    const t0 = performance.now();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < n) {
        next++;
        const res = await post('/v1/chat/completions', chatBody('bench', 'hello', { stream: true }), OPENAI);
        const text = await res.text();
        if (!text.endsWith('data: [DONE]\n\n')) throw new Error('incomplete stream');
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    const ms = performance.now() - t0;
    // Generous bound: this guards against accidental per-request delays, not a benchmark.
    expect(ms).toBeLessThan(5000);
  });

  it('starts from the CLI, prints PROVIDER_SIM_URL and exits on SIGTERM', async () => {
    const cli = fileURLToPath(new URL('./cli.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', cli, '--port', '0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const line = await new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /PROVIDER_SIM_URL=(\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.once('exit', (code) => reject(new Error(`cli exited early with ${code}`)));
      setTimeout(() => reject(new Error('cli did not start')), 15_000);
    });
    expect(line).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await fetch(`${line}/api/tags`);
    expect(res.status).toBe(200);
    await res.text();
    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(0);
  }, 20_000);
});
