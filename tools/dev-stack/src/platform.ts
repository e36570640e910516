import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import type { Topic } from '@vivier/contracts';
import type { DevKafka } from '@vivier/dev-kafka';
import { startKafka } from './infra';
import { freePort } from './ports';
import { startServiceProcess, stopProcess, waitReady, type ServiceProcess } from './processes';
import type { BackendService, Service } from './paths';
import { isolatedDatabase } from './test-infra';
import { startProviderSim } from '@vivier/provider-sim';
import { testEnv } from '@vivier/service-kit/testing';

/**
 * The fault-injection harness: the whole platform as separate processes — by default two
 * instances each of gateway, chat, admin and worker plus auth — against the real PostgreSQL (a
 * database of its own) and Redis, the dev Kafka broker (3 brokers, with its control interface),
 * the run's S3 server and the provider simulator. It can SIGKILL, SIGTERM and restart any
 * instance, take brokers down, inject Kafka errors, cut the platform off Redis (every service
 * reaches Redis through a loopback proxy the harness holds), switch the simulator's faults, and
 * end every run with an audit of what the platform promised.
 */

type Ref<T> = { current: T };

/**
 * A loopback TCP proxy: round-robin over its upstreams (what a Kubernetes Service does for the
 * gateways' calls to chat instances), skipping those that refuse; `cut()` drops every connection
 * and refuses new ones until `restore()`.
 */
export class TcpProxy {
  private readonly sockets = new Set<net.Socket>();
  private next = 0;
  private cutOff = false;
  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private readonly upstreams: Ref<number[]>,
  ) {}

  static async start(upstreams: number[]): Promise<TcpProxy> {
    const ref: Ref<number[]> = { current: upstreams };
    const holder: { proxy?: TcpProxy } = {};
    const server = net.createServer((client) => holder.proxy?.accept(client));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    holder.proxy = new TcpProxy(server, (server.address() as net.AddressInfo).port, ref);
    return holder.proxy;
  }

  setUpstreams(ports: number[]): void {
    this.upstreams.current = ports;
  }

  cut(): void {
    this.cutOff = true;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  restore(): void {
    this.cutOff = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket, tried = 0): void {
    const ports = this.upstreams.current;
    if (this.cutOff || ports.length === 0 || tried >= ports.length) {
      client.destroy();
      return;
    }
    const port = ports[this.next++ % ports.length]!;
    const upstream = net.connect(port, '127.0.0.1');
    client.pause();
    upstream.once('connect', () => {
      this.sockets.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      client.resume();
    });
    upstream.once('error', () => {
      if (!upstream.readyState || upstream.connecting) return this.accept(client, tried + 1);
      client.destroy();
    });
    const done = () => {
      this.sockets.delete(client);
      this.sockets.delete(upstream);
      client.destroy();
      upstream.destroy();
    };
    client.once('close', done);
    client.once('error', done);
    upstream.once('close', () => {
      if (this.sockets.has(upstream)) done();
    });
  }
}

export interface PlatformOptions {
  /** A name for the database and Redis keys of this platform (lower case, digits, `_`). */
  label: string;
  instances?: Partial<Record<Service, number>>;
  brokers?: number;
  /** Extra variables for every service. */
  env?: Record<string, string>;
  /** The providers file (default: the simulator as `openai`, and the built-in `sim`). */
  providers?: (simUrl: string) => unknown;
}

export interface Instance {
  name: string;
  service: Service;
  port: number;
  proc: ServiceProcess;
  env: NodeJS.ProcessEnv;
}

export interface AuditReport {
  userMessages: number;
  /** User messages without exactly one final reply (completed, cancelled or failed). */
  unanswered: string[];
  /** Replies still `streaming`. */
  stuck: string[];
  /** Replies by final status. */
  replies: Record<string, number>;
  /** What chat stored, and what admin counted from the events, for the same users. */
  chatUsage: { replies: number; tokensIn: number; tokensOut: number };
  adminUsage: { replies: number; tokensIn: number; tokensOut: number };
  /** Records on any dead-letter topic. */
  deadLetters: number;
  /** Unpublished outbox rows per schema. */
  outbox: Record<string, number>;
}

const DEFAULT_INSTANCES: Record<Service, number> = { auth: 1, gateway: 2, chat: 2, admin: 2, worker: 2 };
const SERVICE_ORDER: Service[] = ['auth', 'chat', 'admin', 'worker', 'gateway'];

export class Platform {
  readonly instances = new Map<string, Instance>();
  private constructor(
    readonly kafka: DevKafka,
    readonly sim: Awaited<ReturnType<typeof startProviderSim>>,
    readonly db: pg.Pool,
    readonly redis: TcpProxy,
    /** The gateways reach the chat instances (and auth, admin) through these, as through a Service. */
    readonly upstreams: Record<'auth' | 'chat' | 'admin', TcpProxy>,
    private readonly database: Awaited<ReturnType<typeof isolatedDatabase>>,
  ) {}

  static async start(options: PlatformOptions): Promise<Platform> {
    const counts = { ...DEFAULT_INSTANCES, ...options.instances };
    const kafka = await startKafka(options.brokers ?? 3);
    const database = await isolatedDatabase(options.label);
    const sim = await startProviderSim({ port: 0 });
    const url = new URL(process.env.VIVIER_TEST_DATABASE_ADMIN_URL!);
    url.pathname = new URL(database.serviceUrls.auth).pathname;
    const db = new pg.Pool({ connectionString: url.toString(), max: 4 });
    const redisUrl = new URL(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
    const redis = await TcpProxy.start([Number(redisUrl.port || 6379)]);
    const upstreams = { auth: await TcpProxy.start([]), chat: await TcpProxy.start([]), admin: await TcpProxy.start([]) };
    const platform = new Platform(kafka, sim, db, redis, upstreams, database);

    const dir = mkdtempSync(path.join(os.tmpdir(), `vivier-${options.label}-`));
    const providersFile = path.join(dir, 'providers.json');
    const providers = options.providers?.(sim.url) ?? { providers: { sim: { tokensPerSecond: 200, firstTokenLatencyMs: 20 }, openai: { baseUrl: `${sim.url}/v1`, apiKey: 'sk-sim' } } };
    writeFileSync(providersFile, JSON.stringify(providers));
    redisUrl.port = String(redis.port);
    const common: Record<string, string> = {
      KAFKA_BROKERS: kafka.bootstrap.join(','),
      REDIS_URL: redisUrl.toString(),
      REDIS_KEY_PREFIX: `${process.env.VIVIER_TEST_REDIS_PREFIX ?? 'vivier-test:'}${options.label}:`,
      LOG_LEVEL: 'warn',
      CONSUMER_SESSION_TIMEOUT_MS: '6000',
      CONSUMER_MAX_WAIT_MS: '50',
      PROVIDERS_FILE: providersFile,
      CHAT_DEFAULT_MODEL: 'sim/fast',
      REGISTER_RATE_LIMIT_PER_IP: '100000',
      RATE_LIMIT_PER_IP: '1000000',
      RATE_LIMIT_PER_IP_AUTHENTICATED: '1000000',
      RATE_LIMIT_PER_USER: '1000000',
      AUTH_URL: `http://127.0.0.1:${upstreams.auth.port}`,
      CHAT_URL: `http://127.0.0.1:${upstreams.chat.port}`,
      ADMIN_URL: `http://127.0.0.1:${upstreams.admin.port}`,
      ...options.env,
    };
    try {
      for (const service of SERVICE_ORDER) {
        const started: Instance[] = [];
        for (let i = 1; i <= counts[service]; i++) {
          const name = `${service}-${i}`;
          const env = {
            ...process.env,
            ...testEnv(service, { ...common, ...(service === 'gateway' ? {} : { DATABASE_URL: database.serviceUrls[service as BackendService] }) }),
          };
          const port = await freePort();
          started.push({ name, service, port, env, proc: startServiceProcess(service, { name, port, env }) });
        }
        await Promise.all(started.map((i) => waitReady(i.proc, 90_000)));
        for (const instance of started) platform.instances.set(instance.name, instance);
        platform.routeUpstreams();
      }
    } catch (error) {
      await platform.stop();
      throw error;
    }
    return platform;
  }

  /** `http://127.0.0.1:<port>` of an instance. */
  url(name: string): string {
    const instance = this.instances.get(name);
    if (!instance) throw new Error(`no instance ${name}`);
    return `http://127.0.0.1:${instance.port}`;
  }

  /** The last lines an instance printed (its current process), for a failure's message. */
  output(name: string): string {
    return this.instances.get(name)?.proc.tail.join('\n') ?? '';
  }

  /** The running instances of a service. */
  of(service: Service): Instance[] {
    return [...this.instances.values()].filter((i) => i.service === service && i.proc.child.exitCode === null && i.proc.child.signalCode === null);
  }

  /** SIGKILL (crash) or SIGTERM (orderly stop) an instance; resolves when it has exited. */
  async kill(name: string, signal: 'SIGKILL' | 'SIGTERM' = 'SIGKILL'): Promise<number | null> {
    const instance = this.instances.get(name)!;
    instance.proc.child.kill(signal);
    const code = await instance.proc.exited;
    this.routeUpstreams();
    return code;
  }

  /** Starts a stopped instance again on its port, and waits until it is ready. */
  async restart(name: string): Promise<void> {
    const instance = this.instances.get(name)!;
    if (instance.proc.child.exitCode === null && instance.proc.child.signalCode === null) await this.kill(name, 'SIGTERM');
    instance.proc = startServiceProcess(instance.service, { name, port: instance.port, env: instance.env });
    await waitReady(instance.proc, 90_000);
    this.routeUpstreams();
  }

  private routeUpstreams(): void {
    for (const service of ['auth', 'chat', 'admin'] as const) this.upstreams[service].setUpstreams(this.of(service).map((i) => i.port));
  }

  /**
   * What the platform promises, checked in the databases once things settled: every user message
   * has exactly one final reply and none is stuck streaming; admin counted every reply once
   * (requests and tokens equal what chat stored); no outbox row is left unpublished.
   */
  async audit(): Promise<AuditReport> {
    const q = async <T extends pg.QueryResultRow>(text: string, values: unknown[] = []) => (await this.db.query<T>(text, values)).rows;
    // One grouped pass over the replies (a correlated count per user message has no index on
    // reply_to to use: quadratic, hours at the scale run's 100k messages).
    const unanswered = await q<{ id: string }>(
      `select u.id from chat.messages u
         left join (select reply_to, count(*) as n from chat.messages
                     where role = 'assistant' and status in ('completed', 'cancelled', 'failed') group by reply_to) a on a.reply_to = u.id
        where u.role = 'user' and coalesce(a.n, 0) <> 1`,
    );
    const stuck = await q<{ id: string }>(`select id from chat.messages where role = 'assistant' and status not in ('completed', 'cancelled', 'failed')`);
    const statuses = await q<{ status: string; n: number }>(`select status, count(*)::int as n from chat.messages where role = 'assistant' group by status`);
    const [chatUsage] = await q<{ replies: number; tokens_in: number; tokens_out: number }>(
      `select count(*)::int as replies, coalesce(sum(prompt_tokens), 0)::bigint as tokens_in, coalesce(sum(completion_tokens), 0)::bigint as tokens_out
         from chat.messages where role = 'assistant' and status in ('completed', 'cancelled', 'failed') and model is not null`,
    );
    const [adminUsage] = await q<{ replies: number; tokens_in: number; tokens_out: number }>(
      `select coalesce(sum(messages), 0)::int as replies, coalesce(sum(tokens_in), 0)::bigint as tokens_in, coalesce(sum(tokens_out), 0)::bigint as tokens_out from admin.usage_daily`,
    );
    const [users] = await q<{ n: number }>(`select count(*)::int as n from chat.messages where role = 'user'`);
    const outbox: Record<string, number> = {};
    for (const schema of ['auth', 'chat', 'admin', 'worker']) {
      outbox[schema] = (await q<{ n: number }>(`select count(*)::int as n from "${schema}".outbox where published_at is null`))[0]!.n;
    }
    return {
      userMessages: users!.n,
      unanswered: unanswered.map((r) => r.id),
      stuck: stuck.map((r) => r.id),
      replies: Object.fromEntries(statuses.map((r) => [r.status, r.n])),
      chatUsage: { replies: chatUsage!.replies, tokensIn: Number(chatUsage!.tokens_in), tokensOut: Number(chatUsage!.tokens_out) },
      adminUsage: { replies: adminUsage!.replies, tokensIn: Number(adminUsage!.tokens_in), tokensOut: Number(adminUsage!.tokens_out) },
      deadLetters: await this.deadLetters(),
      outbox,
    };
  }

  /** Records on every dead-letter topic (`<topic>.dlq.<group>`). */
  async deadLetters(): Promise<number> {
    return Object.values(await this.deadLetterCounts()).reduce((a, b) => a + b, 0);
  }

  /** Records per dead-letter topic, from their watermarks. */
  async deadLetterCounts(): Promise<Record<string, number>> {
    const admin = new Kafka({ clientId: 'harness-audit', brokers: this.kafka.bootstrap, logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    try {
      const topics = (await admin.listTopics()).filter((t) => t.includes('.dlq.'));
      const counts: Record<string, number> = {};
      for (const topic of topics) {
        counts[topic] = (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
      }
      return counts;
    } finally {
      await admin.disconnect();
    }
  }

  async stop(): Promise<void> {
    const order = [...this.instances.values()].sort((a, b) => SERVICE_ORDER.indexOf(b.service) - SERVICE_ORDER.indexOf(a.service));
    await Promise.all(order.map((i) => stopProcess(i.proc, 5000)));
    for (const proxy of [this.redis, ...Object.values(this.upstreams)]) await proxy.close();
    await this.sim.close();
    await this.db.end();
    await this.kafka.stop();
    await this.database.drop();
  }
}

export type { Topic };
