import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { closeState, signContext, type ServiceApp } from '@vivier/service-kit';
import { testEnv } from '@vivier/service-kit/testing';
import { buildChatApp, type BuildChatAppOptions } from '../src/app';
import { loadChatConfig, type ChatConfig } from '../src/config';

/** A providers file (JSON) in a temporary folder. */
export function writeProvidersFile(content: unknown): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vivier-chat-providers-'));
  const file = path.join(dir, 'providers.json');
  writeFileSync(file, JSON.stringify(content, null, 2));
  return file;
}

/** The built-in simulator with no pacing: replies come at once. */
export const INSTANT_SIM = { providers: { sim: { tokensPerSecond: 0, firstTokenLatencyMs: 0 } } };

export interface TestChat {
  app: ServiceApp;
  config: ChatConfig;
  /** Base URL once `listen()` was called. */
  url: string;
  listen(): Promise<string>;
  close(): Promise<void>;
}

/** The chat app on the test infrastructure, ready (partitions ensured, consumers off unless asked). */
export async function startChat(
  env: Record<string, string> = {},
  options: BuildChatAppOptions = {},
): Promise<TestChat> {
  const config = loadChatConfig(testEnv('chat', { PROVIDERS_FILE: writeProvidersFile(INSTANT_SIM), ...env }));
  const app = await buildChatApp(config, { consumers: false, env: {}, ...options });
  try {
    await app.ready();
  } catch (error) {
    // A start refused (as it should be): its connections still close.
    await app.close().catch(() => undefined);
    throw error;
  }
  const chat: TestChat = {
    app,
    config,
    url: '',
    async listen() {
      await app.listen({ host: '127.0.0.1', port: 0 });
      const address = app.server.address();
      chat.url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
      return chat.url;
    },
    close: () => closeReporting(app),
  };
  return chat;
}

/**
 * app.close(), saying on stderr what it is still doing if it runs past 30 s: the close steps under
 * way and the connections still open. (An afterAll's close has timed out at 60 s in CI three
 * times in some fifteen runs, with the service's own log silenced; this names the step next time.)
 */
async function closeReporting(app: ServiceApp): Promise<void> {
  const report = setTimeout(() => {
    void closeState(app).then(({ running, openConnections }) =>
      process.stderr.write(`chat test app: close() still running after 30 s: steps ${JSON.stringify(running)}, open connections ${openConnections}\n`),
    );
  }, 30_000);
  report.unref();
  try {
    await app.close();
  } finally {
    clearTimeout(report);
  }
}

export interface TestUser {
  id: string;
  headers: Record<string, string>;
}

/** A caller as the gateway vouches for it (signed context). */
export function testUser(secret = 'dev-only-internal-identity-secret-change-me'): TestUser {
  const id = randomUUID();
  return {
    id,
    headers: signContext(
      {
        ip: '127.0.0.1',
        userAgent: 'vitest',
        identity: { sub: id, role: 'user', sid: randomUUID(), kind: 'access_token' },
        exp: Math.floor(Date.now() / 1000) + 3600,
      },
      secret,
    ),
  };
}

export interface SseEvent {
  id: number;
  event: string;
  data: unknown;
}

/** Parses a complete SSE body. */
export function parseSse(body: string): SseEvent[] {
  const events: SseEvent[] = [];
  for (const block of body.split('\n\n')) {
    if (!block.trim() || block.startsWith(':')) continue;
    let id = NaN;
    let event = 'message';
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('id: ')) id = Number(line.slice(4));
      else if (line.startsWith('event: ')) event = line.slice(7);
      else if (line.startsWith('data: ')) data.push(line.slice(6));
    }
    if (data.length > 0) events.push({ id, event, data: JSON.parse(data.join('\n')) });
  }
  return events;
}

/**
 * Reads an SSE response as it streams, over real HTTP. `stop` decides after each event whether to
 * hang up (the connection is then destroyed, as a closed tab would).
 */
export async function streamSse(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: unknown },
  stop: (event: SseEvent, all: SseEvent[]) => boolean = () => false,
): Promise<{ status: number; events: SseEvent[]; headers: Headers; disconnectedAt?: number }> {
  const controller = new AbortController();
  const response = await fetch(url, {
    method: init.method ?? 'GET',
    headers: { accept: 'text/event-stream', ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}), ...init.headers },
    ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
    signal: controller.signal,
  });
  const events: SseEvent[] = [];
  if (!response.body || !(response.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
    return { status: response.status, events, headers: response.headers };
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end + 2);
        buffer = buffer.slice(end + 2);
        for (const event of parseSse(block)) {
          events.push(event);
          if (stop(event, events)) {
            const disconnectedAt = Date.now();
            controller.abort();
            return { status: response.status, events, headers: response.headers, disconnectedAt };
          }
        }
      }
    }
  } catch (error) {
    if (!controller.signal.aborted) throw error;
  }
  return { status: response.status, events, headers: response.headers };
}

/** Polls until `check` returns a value (not undefined/false) or the time is up. */
export async function eventually<T>(check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms${lastError ? `: ${String(lastError)}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** A pool of the chat role (for looking at the stored rows and outbox). */
export function chatPool(): pg.Pool {
  const pool = new pg.Pool({ connectionString: testEnv('chat').DATABASE_URL, max: 2 });
  pool.on('error', () => undefined);
  return pool;
}

/** Creates a chat through the API and returns its id. */
export async function createChat(app: ServiceApp, user: TestUser, body: Record<string, unknown> = {}): Promise<string> {
  const res = await app.inject({ method: 'POST', url: '/api/v1/chats', headers: user.headers, payload: body });
  if (res.statusCode !== 201) throw new Error(`create chat: ${res.statusCode} ${res.body}`);
  return res.json().id as string;
}
