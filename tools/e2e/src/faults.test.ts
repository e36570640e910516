import { randomUUID } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allTopics, SUBSCRIPTIONS, TOPICS } from '@vivier/contracts';
import { Platform, type AuditReport } from '@vivier/dev-stack/platform';

// Faults against the whole platform as processes (tools/dev-stack/src/platform.ts): two instances each
// of gateway, chat, admin and worker plus auth, three dev brokers. Each scenario breaks something
// and the run's audit must hold after it: one final reply per user message, none stuck, admin's
// usage equal to chat's replies, the outboxes drained, nothing dead-lettered that was not poison.

let platform: Platform;
let poisoned = 0;

beforeAll(async () => {
  platform = await Platform.start({
    label: 'faults',
    // A reply whose instance died is failed within ~2.5 s instead of the production 15 s + 10 s.
    env: { CHAT_REPLY_LEASE_MS: '2000', CHAT_SWEEP_INTERVAL_MS: '500' },
    providers: (simUrl) => ({
      providers: { sim: { tokensPerSecond: 25, firstTokenLatencyMs: 20 }, openai: { baseUrl: `${simUrl}/v1`, apiKey: 'sk-sim', idleTimeoutMs: 1500, maxRetries: 1 } },
      // `resilient` falls back from the simulator's flaky model to the built-in provider.
      deployments: [
        { id: 'flaky', provider: 'openai', model: 'flaky-model' },
        { id: 'backup', provider: 'sim', model: 'fast' },
      ],
      aliases: [{ alias: 'resilient', deployments: ['flaky', 'backup'], strategy: 'ordered' }],
      router: { maxRetryDelayMs: 3000, failureThreshold: 1000 },
    }),
  });
}, 240_000);
afterAll(async () => {
  await platform?.stop();
});

interface User {
  token: string;
  headers: Record<string, string>;
}

async function register(gateway: string): Promise<User> {
  const res = await fetch(`${gateway}/api/v1/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: `faults-${randomUUID().slice(0, 8)}@example.com`, password: 'a password under faults' }),
  });
  expect(res.status).toBe(201);
  const { accessToken } = (await res.json()) as { accessToken: string };
  return { token: accessToken, headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' } };
}

async function newChat(gateway: string, user: User): Promise<string> {
  const res = await fetch(`${gateway}/api/v1/chats`, { method: 'POST', headers: user.headers, body: '{}' });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

/** A new user with one chat, through `gateway`. */
async function userWithChat(gateway: string): Promise<{ user: User; chatId: string }> {
  const user = await register(gateway);
  return { user, chatId: await newChat(gateway, user) };
}

/** Sends a message over SSE; resolves with how the stream ended (never hangs past `timeoutMs`). */
async function stream(gateway: string, user: User, chatId: string, content: string, timeoutMs = 30_000, model?: string): Promise<{ status: number; end: 'done' | 'error' | 'closed' }> {
  try {
    const res = await fetch(`${gateway}/api/v1/chats/${chatId}/messages`, {
      method: 'POST',
      headers: { ...user.headers, accept: 'text/event-stream' },
      body: JSON.stringify({ content, ...(model ? { model } : {}) }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (res.status !== 200) return { status: res.status, end: 'error' };
    let text = '';
    try {
      for await (const chunk of res.body!) text += Buffer.from(chunk as Uint8Array).toString();
    } catch {
      return { status: 200, end: text.includes('event: error') ? 'error' : 'closed' };
    }
    return { status: 200, end: text.includes('event: done') ? 'done' : text.includes('event: error') ? 'error' : 'closed' };
  } catch (error) {
    if ((error as Error).name === 'TimeoutError') throw new Error('a reply stream hung');
    return { status: 0, end: 'closed' };
  }
}

/** Waits until the platform settled and the audit holds; returns the last report. */
async function auditHolds(timeoutMs = 60_000): Promise<AuditReport> {
  let report!: AuditReport;
  await expect
    .poll(
      async () => {
        report = await platform.audit();
        return (
          report.unanswered.length === 0 &&
          report.stuck.length === 0 &&
          report.chatUsage.replies === report.adminUsage.replies &&
          report.chatUsage.tokensOut === report.adminUsage.tokensOut &&
          report.chatUsage.tokensIn === report.adminUsage.tokensIn &&
          Object.values(report.outbox).every((n) => n === 0)
        );
      },
      { timeout: timeoutMs, interval: 500 },
    )
    .toBe(true)
    .catch(() => {
      throw new Error(`the audit does not hold: ${JSON.stringify(report)}`);
    });
  expect(report.deadLetters).toBe(poisoned);
  return report;
}

describe('fault injection', () => {
  it('SIGKILL of a chat instance during 20 streaming replies: every reply ends, none stuck, usage counted once', async () => {
    const gateways = platform.of('gateway').map((g) => platform.url(g.name));
    const users = await Promise.all(Array.from({ length: 5 }, (_, i) => register(gateways[i % 2]!)));
    const chats = await Promise.all(Array.from({ length: 20 }, (_, i) => newChat(gateways[i % 2]!, users[i % 5]!)));
    // About three seconds of streaming each at 25 tokens/s.
    const words = Array.from({ length: 40 }, (_, i) => `w${i}`).join(' ');
    const replies = chats.map((chatId, i) => stream(gateways[i % 2]!, users[i % 5]!, chatId, `echo: ${words}`));
    // Every turn stored (a loaded machine may take a while to start twenty), then a moment of
    // streaming: the kill lands mid-reply, with three seconds of each to go.
    await expect
      .poll(async () => (await platform.db.query<{ n: number }>(`select count(*)::int as n from chat.messages where role = 'user' and chat_id = any($1)`, [chats])).rows[0]!.n, { timeout: 30_000, interval: 50 })
      .toBe(20);
    await new Promise((r) => setTimeout(r, 500));
    await platform.kill('chat-1', 'SIGKILL');
    const ends = await Promise.all(replies);
    // Those on the survivor finish; those on the dead instance end with an error or a closed stream.
    expect(ends.filter((e) => e.end === 'done').length).toBeGreaterThan(0);
    expect(ends.filter((e) => e.end !== 'done').length).toBeGreaterThan(0);

    await platform.restart('chat-1');
    const report = await auditHolds();
    expect(report.userMessages).toBe(20);
    expect(report.replies.failed).toBe(ends.filter((e) => e.end !== 'done').length);
    expect(report.replies.completed).toBe(ends.filter((e) => e.end === 'done').length);
  }, 180_000);

  it('a poison record on every topic is dead-lettered, and the events behind it still flow', async () => {
    const kafka = new Kafka({ clientId: 'faults-poison', brokers: platform.kafka.bootstrap, logLevel: logLevel.NOTHING });
    const producer = kafka.producer();
    await producer.connect();
    try {
      const consumed = new Set<string>(Object.values(SUBSCRIPTIONS).flat());
      for (const topic of allTopics().map((t) => t.name).filter((t) => consumed.has(t))) {
        await producer.send({ topic, messages: [{ key: 'poison', value: '{"this is": "not an event"' }] });
        // One dead letter per group that reads the topic.
        poisoned += Object.values(SUBSCRIPTIONS).filter((topics) => (topics as readonly string[]).includes(topic)).length;
      }
    } finally {
      await producer.disconnect();
    }
    const gateway = platform.url('gateway-2');
    const user = await register(gateway);
    expect((await stream(gateway, user, await newChat(gateway, user), 'echo: after the poison')).end).toBe('done');
    await expect
      .poll(() => platform.deadLetters(), { timeout: 60_000, interval: 500 })
      .toBe(poisoned)
      .catch(async (error: unknown) => {
        throw new Error(`${(error as Error).message}: ${JSON.stringify(await platform.deadLetterCounts())}`);
      });
    await auditHolds();
  }, 120_000);

  it('bad input at volume: always a 4xx problem, never a 5xx, never a stored half-record', async () => {
    const gateway = platform.url('gateway-1');
    const { user, chatId } = await userWithChat(gateway);
    const before = await platform.audit();
    const injections = [`'; drop table chat.messages; --`, `<script>alert(1)</script>`, `" or 1=1 --`, '\u0000', '${7*7}', '../../etc/passwd'];
    const bodies: Array<{ type: string; body: string | Buffer }> = [
      { type: 'application/json', body: '{"content": "unterminated' },
      { type: 'application/json', body: Buffer.from([0x7b, 0x22, 0x63, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]) },
      { type: 'application/json', body: JSON.stringify({ content: 'x'.repeat(2 * 1024 * 1024) }) },
      { type: 'text/plain', body: 'content=hello' },
      { type: 'application/x-www-form-urlencoded', body: 'content=hello' },
      { type: 'application/json', body: JSON.stringify({ content: 'hello', unknownField: true }) },
      { type: 'application/json', body: JSON.stringify({ content: { nested: true } }) },
      { type: 'application/json', body: '[]' },
      { type: 'application/json', body: 'null' },
      ...injections.map((s) => ({ type: 'application/json', body: JSON.stringify({ title: s, unknown: s }) })),
    ];
    const targets = [
      { method: 'POST', path: `/api/v1/chats/${chatId}/messages` },
      { method: 'POST', path: '/api/v1/chats' },
      { method: 'PATCH', path: `/api/v1/chats/${chatId}` },
      { method: 'POST', path: '/api/v1/auth/login' },
      { method: 'POST', path: '/api/v1/auth/register' },
      { method: 'POST', path: '/v1/chat/completions' },
    ];
    const statuses: number[] = [];
    for (const target of targets) {
      for (const { type, body } of bodies) {
        const res = await fetch(`${gateway}${target.path}`, { method: target.method, headers: { authorization: user.headers.authorization!, 'content-type': type }, body });
        statuses.push(res.status);
        expect(res.status, `${target.method} ${target.path} ${type} ${String(body).slice(0, 40)}`).toBeGreaterThanOrEqual(400);
        expect(res.status, `${target.method} ${target.path}`).toBeLessThan(500);
        const problem = (await res.json()) as { code?: string; status?: number; error?: { type?: string } };
        expect(problem.code ?? problem.error?.type, `${target.method} ${target.path}: a stable code`).toBeTruthy();
      }
    }
    // Injection strings where text is allowed are stored as text, verbatim (a NUL, which
    // PostgreSQL text cannot hold, is refused with a problem), never a 5xx.
    for (const s of injections) {
      const res = await fetch(`${gateway}/api/v1/chats`, { method: 'POST', headers: user.headers, body: JSON.stringify({ title: `t ${s}` }) });
      expect(res.status, JSON.stringify(s)).toBeLessThan(500);
      const body = (await res.json()) as { title?: string; code?: string };
      if (res.status === 201) expect(body.title).toBe(`t ${s}`);
      else expect(body.code, JSON.stringify(s)).toBeTruthy();
    }
    for (const s of injections.slice(0, 3)) {
      const res = await fetch(`${gateway}/api/v1/chats/search?q=${encodeURIComponent(s)}`, { headers: user.headers });
      expect(res.status).toBeLessThan(500);
    }
    const ws = new WebSocket(`${gateway.replace('http', 'ws')}/api/v1/ws`, { headers: { authorization: user.headers.authorization! } });
    await new Promise((resolve) => ws.once('open', resolve));
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    ws.send('x'.repeat(200_000));
    expect(await closed).toBe(1009);

    const after = await platform.audit();
    expect(after.userMessages).toBe(before.userMessages);
    await auditHolds();
  }, 120_000);

  it('Redis away for 30 s: sign-ins and chats keep working, and recover by themselves', async () => {
    const gateway = platform.url('gateway-1');
    const { user, chatId } = await userWithChat(gateway);
    platform.redis.cut();
    try {
      const started = Date.now();
      let rounds = 0;
      while (Date.now() - started < 30_000) {
        const signIn = await fetch(`${gateway}/api/v1/auth/register`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ email: `no-redis-${randomUUID().slice(0, 8)}@example.com`, password: 'a password without redis' }),
        });
        expect(signIn.status).toBe(201);
        expect((await stream(platform.url(`gateway-${(rounds % 2) + 1}`), user, chatId, `echo: without redis ${rounds}`)).end).toBe('done');
        rounds += 1;
        await new Promise((r) => setTimeout(r, 3000));
      }
      expect(rounds).toBeGreaterThanOrEqual(5);
    } finally {
      platform.redis.restore();
    }
    // Back: the services reconnect on their own and report Redis ready again.
    for (const instance of [...platform.of('chat'), ...platform.of('gateway')]) {
      await expect
        .poll(async () => ((await (await fetch(`${platform.url(instance.name)}/ready`)).json()) as { checks: Record<string, { status: string }> }).checks.redis?.status, { timeout: 30_000, interval: 500 })
        .toBe('up');
    }
    expect((await stream(gateway, user, chatId, 'echo: redis is back')).end).toBe('done');
    await auditHolds();
  }, 120_000);

  it('all Kafka brokers down for 60 s under steady traffic: chat answers, the outbox grows, then drains with usage equal', async () => {
    const gateway = platform.url('gateway-2');
    const { user, chatId } = await userWithChat(gateway);
    const pids = [...platform.instances.values()].map((i) => i.proc.child.pid);
    for (const id of [1, 2, 3]) await platform.kafka.brokerDown(id);
    let backlogSeen = 0;
    try {
      const started = Date.now();
      while (Date.now() - started < 60_000) {
        expect((await stream(gateway, user, chatId, 'echo: while kafka is away')).end).toBe('done');
        backlogSeen = Math.max(backlogSeen, (await platform.db.query<{ n: number }>('select count(*)::int as n from chat.outbox where published_at is null')).rows[0]!.n);
        await new Promise((r) => setTimeout(r, 2000));
      }
      const ready = (await (await fetch(`${platform.url('chat-1')}/ready`)).json()) as { checks: Record<string, { status: string }> };
      expect(ready.checks.kafka?.status).toBe('down');
    } finally {
      for (const id of [1, 2, 3]) await platform.kafka.brokerUp(id);
    }
    expect(backlogSeen).toBeGreaterThan(10);
    await auditHolds(120_000);
    // Nobody crashed or restarted meanwhile.
    expect([...platform.instances.values()].map((i) => i.proc.child.pid)).toEqual(pids);
    expect([...platform.instances.values()].every((i) => i.proc.child.exitCode === null)).toBe(true);
  }, 240_000);

  it('services killed between their commits and the publish get the events to Kafka once restarted (QUALITY-BAR 18)', async () => {
    // With every broker down, each commit of auth and chat leaves its event in the outbox, unsent:
    // a SIGKILL of every instance of both then lands between the commit and the publish of each.
    const gateway = platform.url('gateway-1');
    const unpublished = async (schema: string) =>
      (await platform.db.query<{ n: number }>(`select count(*)::int as n from "${schema}".outbox where published_at is null`)).rows[0]!.n;
    const killed = ['auth-1', 'chat-1', 'chat-2'];
    for (const id of [1, 2, 3]) await platform.kafka.brokerDown(id);
    let registeredId = '';
    try {
      const res = await fetch(`${gateway}/api/v1/auth/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: `killed-${randomUUID().slice(0, 8)}@example.com`, password: 'a password before the kill' }),
      });
      expect(res.status).toBe(201);
      const body = (await res.json()) as { user: { id: string }; accessToken: string };
      registeredId = body.user.id;
      const user = { token: body.accessToken, headers: { authorization: `Bearer ${body.accessToken}`, 'content-type': 'application/json' } };
      const chatId = await newChat(gateway, user);
      for (let i = 0; i < 3; i++) expect((await stream(gateway, user, chatId, `echo: before the kill ${i}`)).end).toBe('done');
      for (const name of killed) await platform.kill(name, 'SIGKILL');
    } finally {
      for (const id of [1, 2, 3]) await platform.kafka.brokerUp(id);
    }
    const left = { auth: await unpublished('auth'), chat: await unpublished('chat') };
    // The registration; the chat, and at least the completion of each reply.
    expect(left.auth).toBeGreaterThan(0);
    expect(left.chat).toBeGreaterThanOrEqual(4);
    // Kafka is back, but no process of either service is left to publish their rows: they wait.
    await new Promise((r) => setTimeout(r, 3000));
    expect({ auth: await unpublished('auth'), chat: await unpublished('chat') }).toEqual(left);
    expect((await platform.db.query('select 1 from admin.users where id = $1', [registeredId])).rows).toHaveLength(0);

    for (const name of killed) await platform.restart(name);
    // Restarted, they publish what they committed before the kill: admin learns of the user from
    // auth.events, and counts every reply (the audit compares admin's usage with chat's replies).
    await auditHolds(120_000);
    expect((await platform.db.query('select 1 from admin.users where id = $1', [registeredId])).rows).toHaveLength(1);
  }, 240_000);

  it('one broker of three down and partition leaders moved: no loss, no effect twice', async () => {
    const gateway = platform.url('gateway-1');
    const { user, chatId } = await userWithChat(gateway);
    await platform.kafka.brokerDown(2);
    try {
      const chatEvents = allTopics().find((t) => t.name === TOPICS.chatEvents)!;
      for (let partition = 0; partition < chatEvents.partitions; partition++) await platform.kafka.setLeader(TOPICS.chatEvents, partition, partition % 2 === 0 ? 1 : 3);
      for (let i = 0; i < 6; i++) expect((await stream(gateway, user, chatId, `echo: leaders moved ${i}`)).end).toBe('done');
    } finally {
      await platform.kafka.brokerUp(2);
    }
    await auditHolds(90_000);
  }, 180_000);

  it('provider faults, with a fallback and without: every reply reaches a final state', async () => {
    const gateway = platform.url('gateway-2');
    const { user, chatId } = await userWithChat(gateway);
    const cases: Array<{ faults: Record<string, unknown>; model: string; expect: 'done' | 'error' }> = [
      { faults: { status429: true, retryAfter: 200 }, model: 'resilient', expect: 'done' },
      { faults: { status5xx: 503 }, model: 'resilient', expect: 'done' },
      { faults: { status5xx: 500 }, model: 'openai/flaky-model', expect: 'error' },
      { faults: { status429: true, retryAfter: 60_000 }, model: 'openai/flaky-model', expect: 'error' },
      { faults: { stallAfterChunks: 2 }, model: 'openai/flaky-model', expect: 'error' },
      { faults: { cutAfterChunks: 3 }, model: 'openai/flaky-model', expect: 'error' },
      { faults: { cutAfterChunks: 3 }, model: 'resilient', expect: 'error' }, // after the first token: no fallback
    ];
    try {
      for (const c of cases) {
        platform.sim.resetFaults();
        platform.sim.setFaults(c.faults, 'flaky-model');
        const end = await stream(gateway, user, chatId, 'echo: one two three four five six seven', 30_000, c.model);
        expect(end.end === 'done' ? 'done' : 'error', JSON.stringify(c)).toBe(c.expect);
      }
    } finally {
      platform.sim.resetFaults();
    }
    const report = await auditHolds();
    expect(report.stuck).toEqual([]);
  }, 180_000);

  it('SIGTERM of every instance in turn under load (a rolling restart): no request that started before a signal fails', async () => {
    const user = await register(platform.url('gateway-1'));
    // Each client moves to a fresh chat every 20 turns: the load stays that of short chats however
    // long the restarts take (one chat per client grew to thousands of messages on a slow run, every
    // turn reading and sending all of them, which slowed the restarts, which grew the chats further).
    const chatIds = await Promise.all(Array.from({ length: 4 }, () => Promise.all(Array.from({ length: 40 }, () => newChat(platform.url('gateway-1'), user)))));
    const signals: Array<{ at: number; exitedAt?: number; readyAt: number; name: string }> = [];
    const results: Array<{ start: number; end: number; ok: boolean; what: string }> = [];
    let running = true;
    const client = async (k: number) => {
      let i = 0;
      while (running) {
        const gateways = platform.of('gateway');
        if (gateways.length === 0) {
          await new Promise((r) => setTimeout(r, 100));
          continue;
        }
        const gateway = platform.url(gateways[(i + k) % gateways.length]!.name);
        let start = Date.now();
        const list = await fetch(`${gateway}/api/v1/chats`, { headers: user.headers }).then((r) => String(r.status), (e: Error) => e.message);
        results.push({ start, end: Date.now(), ok: list === '200', what: `${gateway} ${k}/${i}: list ${list}` });
        start = Date.now();
        const reply = await stream(gateway, user, chatIds[k]![Math.floor(i / 20) % 40]!, `echo: rolling ${k} ${i}`).then((r) => `${r.status} ${r.end}`, (e: Error) => e.message);
        results.push({ start, end: Date.now(), ok: reply === '200 done', what: `${gateway} ${k}/${i}: reply ${reply}` });
        i += 1;
      }
    };
    const clients = [0, 1, 2, 3].map((k) => client(k));
    // How long each stop and start took, for the message of a failure (a step that hangs would
    // otherwise only show as this test's timeout).
    const steps = () => signals.map((s) => `${s.name}: exited after ${s.exitedAt === undefined ? '-' : s.exitedAt - s.at} ms, ready after ${s.readyAt === Number.POSITIVE_INFINITY ? '-' : s.readyAt - s.at} ms`).join('; ');
    try {
      await new Promise((r) => setTimeout(r, 2000));
      for (const name of ['chat-1', 'chat-2', 'admin-1', 'admin-2', 'worker-1', 'worker-2', 'gateway-1', 'gateway-2']) {
        const signal: (typeof signals)[number] = { at: Date.now(), readyAt: Number.POSITIVE_INFINITY, name };
        signals.push(signal);
        const exited = await Promise.race([platform.kill(name, 'SIGTERM'), new Promise<string>((r) => setTimeout(() => r('no exit within 30 s'), 30_000))]);
        signal.exitedAt = Date.now();
        expect(exited, `${name} after SIGTERM (${steps()}):\n${platform.output(name)}`).toBe(0); // a clean exit after draining
        await platform.restart(name);
        signal.readyAt = Date.now();
        await new Promise((r) => setTimeout(r, 1000));
      }
    } finally {
      // Whatever happened, the clients stop here: left running they would write into the next test.
      running = false;
      await Promise.all(clients);
    }
    console.log(`rolling restart: ${steps()}`);
    // A request may fail only if it started while an instance was going away (it could have been
    // sent to it after it stopped accepting); one in flight when the signal came must succeed.
    const failed = results.filter((r) => !r.ok);
    const unexplained = failed.filter((r) => !signals.some((s) => r.start >= s.at && r.start <= s.readyAt));
    expect(unexplained, JSON.stringify({ unexplained, signals })).toEqual([]);
    const inFlightAtASignal = results.filter((r) => signals.some((s) => r.start < s.at && r.end > s.at));
    expect(inFlightAtASignal.length).toBeGreaterThan(0);
    expect(inFlightAtASignal.every((r) => r.ok)).toBe(true);
    await auditHolds(90_000);
  }, 300_000);

  it('SIGKILL of a gateway: its sockets drop, the client resumes on the other gateway without losing a delta', async () => {
    const user = await register(platform.url('gateway-2'));
    const chatId = await newChat(platform.url('gateway-2'), user);
    const frames: Array<{ type: string; seq?: number; messageId?: string; data?: { text?: string } }> = [];
    const open = (name: string) => {
      const ws = new WebSocket(`${platform.url(name).replace('http', 'ws')}/api/v1/ws`, { headers: { authorization: user.headers.authorization! } });
      ws.on('message', (d) => frames.push(JSON.parse(d.toString()) as (typeof frames)[number]));
      ws.on('error', () => undefined);
      return ws;
    };
    const first = open('gateway-1');
    await expect.poll(() => frames.some((f) => f.type === 'ready'), { timeout: 10_000 }).toBe(true);
    const words = Array.from({ length: 60 }, (_, i) => `g${i}`).join(' ');
    first.send(JSON.stringify({ type: 'chat.send', requestId: 'r', chatId, content: `echo: ${words}` }));
    await expect.poll(() => frames.filter((f) => f.type === 'chat.delta').length, { timeout: 10_000 }).toBeGreaterThan(5);
    const closed = new Promise((resolve) => first.once('close', resolve));
    await platform.kill('gateway-1', 'SIGKILL');
    await closed;
    const messageId = frames.find((f) => f.type === 'chat.accepted')!.messageId!;
    const lastSeq = Math.max(...frames.filter((f) => f.messageId === messageId && f.seq !== undefined).map((f) => f.seq!));
    const second = open('gateway-2');
    await expect.poll(() => frames.filter((f) => f.type === 'ready').length, { timeout: 10_000 }).toBe(2);
    second.send(JSON.stringify({ type: 'chat.resume', chatId, messageId, after: lastSeq }));
    await expect.poll(() => frames.some((f) => f.type === 'chat.done' && f.messageId === messageId), { timeout: 20_000 }).toBe(true);
    second.close();
    // As a client assembles them: by seq, each once (on the new socket the live fan-out and the
    // resumed stream overlap). The reply was still streaming, so the journal answered the resume
    // with every seq: 1..done, none missing, and the text whole.
    const bySeq = new Map<number, (typeof frames)[number]>();
    for (const f of frames) if (f.messageId === messageId && f.seq !== undefined && !bySeq.has(f.seq)) bySeq.set(f.seq, f);
    const done = [...bySeq.values()].find((f) => f.type === 'chat.done')!;
    expect([...bySeq.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: done.seq! }, (_, i) => i + 1));
    const text = [...bySeq.entries()].sort(([a], [b]) => a - b).filter(([, f]) => f.type === 'chat.delta').map(([, f]) => f.data!.text).join('');
    expect(text).toBe(words);
    await platform.restart('gateway-1');
    await auditHolds();
  }, 120_000);
});
