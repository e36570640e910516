// HTTP control channel for a running dev Kafka, so reliability tests and humans (curl) in
// other processes can inject faults. Loopback only: it can take brokers down at will.
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DevKafkaCommandError } from './errors';
import type { DevKafka } from './index';

export interface ControlServer {
  /** e.g. http://127.0.0.1:41234 */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 64 * 1024;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, 'body too large');
    chunks.push(buf);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (!text) return {};
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new HttpError(400, 'body is not valid JSON');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new HttpError(400, 'body must be a JSON object');
  }
  return body as Record<string, unknown>;
}

function num(body: Record<string, unknown>, key: string, fallback?: number): number {
  const v = body[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new HttpError(400, `"${key}" must be an integer`);
  return v;
}

function str(body: Record<string, unknown>, key: string): string {
  const v = body[key];
  if (typeof v !== 'string') throw new HttpError(400, `"${key}" must be a string`);
  return v;
}

function send(res: ServerResponse, status: number, payload: unknown): void {
  const text = JSON.stringify(payload);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * Serves the control API for `devKafka` on 127.0.0.1:`port` (0 = ephemeral):
 *   GET  /                        -> {bootstrap, brokers}
 *   POST /brokers/:id/down | /up
 *   POST /brokers/:id/rtt         {"ms"}
 *   POST /brokers/:id/errors      {"apiKey","errorCode","count"?}
 *   POST /errors                  {"apiKey","errorCode","count"?}
 *   POST /topics                  {"name","partitions"}
 *   POST /leader                  {"topic","partition","brokerId"}
 *   POST /coordinator             {"groupId","brokerId"}
 * Answers {"ok":true}, or {"error":message} with 400 (bad input or the mock refused), 404, 405.
 */
export async function startControlServer(devKafka: DevKafka, port = 0): Promise<ControlServer> {
  const route = async (req: IncomingMessage): Promise<unknown> => {
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';

    if (path === '/') {
      if (method !== 'GET') throw new HttpError(405, 'use GET /');
      return { bootstrap: devKafka.bootstrap, brokers: devKafka.brokers };
    }
    if (method !== 'POST') throw new HttpError(405, `use POST ${path}`);
    const body = await readJson(req);

    const broker = /^\/brokers\/(\d+)\/(down|up|rtt|errors)$/.exec(path);
    if (broker) {
      const id = Number(broker[1]);
      switch (broker[2]) {
        case 'down':
          await devKafka.brokerDown(id);
          break;
        case 'up':
          await devKafka.brokerUp(id);
          break;
        case 'rtt':
          await devKafka.setRtt(id, num(body, 'ms'));
          break;
        default:
          await devKafka.pushBrokerRequestErrors(
            id,
            num(body, 'apiKey'),
            num(body, 'errorCode'),
            num(body, 'count', 1),
          );
      }
      return { ok: true };
    }
    switch (path) {
      case '/errors':
        await devKafka.pushRequestErrors(num(body, 'apiKey'), num(body, 'errorCode'), num(body, 'count', 1));
        return { ok: true };
      case '/topics':
        await devKafka.createTopic(str(body, 'name'), num(body, 'partitions'));
        return { ok: true };
      case '/leader':
        await devKafka.setLeader(str(body, 'topic'), num(body, 'partition'), num(body, 'brokerId'));
        return { ok: true };
      case '/coordinator':
        await devKafka.setGroupCoordinator(str(body, 'groupId'), num(body, 'brokerId'));
        return { ok: true };
      default:
        throw new HttpError(404, `no route ${method} ${path}`);
    }
  };

  const server = createServer((req, res) => {
    // Browsers may reach loopback ports: refuse any request a web page could make (they
    // always carry Origin on cross-site POSTs) and DNS-rebinding hosts.
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    if (req.headers.origin !== undefined || !['127.0.0.1', 'localhost', '[::1]'].includes(host)) {
      send(res, 403, { error: 'forbidden: loopback tools only' });
      return;
    }
    route(req).then(
      (payload) => send(res, 200, payload),
      (err: unknown) => {
        if (err instanceof HttpError) send(res, err.status, { error: err.message });
        else if (err instanceof DevKafkaCommandError || err instanceof RangeError) {
          send(res, 400, { error: err.message });
        } else send(res, 503, { error: err instanceof Error ? err.message : String(err) });
      },
    );
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${bound}`,
    port: bound,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        // Keep-alive connections would otherwise hold close() open.
        server.closeAllConnections();
      }),
  };
}
