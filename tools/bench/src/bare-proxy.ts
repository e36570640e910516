/**
 * The floor for any Node proxy on this machine, as its own process: node:http in, an undici pool
 * out, the request body and the answer piped through — no framework, no auth, no limits, no
 * accounting, no headers beyond the content type and the authorization.
 */
import http from 'node:http';
import { Pool } from 'undici';

const upstream = new Pool(process.env.UPSTREAM_URL!, { connections: 128, pipelining: 1 });
const server = http.createServer(async (req, res) => {
  try {
    const headers: Record<string, string> = {};
    if (req.headers['content-type']) headers['content-type'] = req.headers['content-type'];
    if (req.headers.authorization) headers.authorization = req.headers.authorization;
    const hasBody = req.method !== 'GET' && req.method !== 'HEAD';
    const answer = await upstream.request({ method: req.method as 'GET', path: req.url ?? '/', headers, body: hasBody ? req : null });
    res.writeHead(answer.statusCode, {
      'content-type': String(answer.headers['content-type'] ?? 'application/octet-stream'),
    });
    for await (const chunk of answer.body) res.write(chunk);
    res.end();
  } catch {
    res.writeHead(502).end();
  }
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  process.stdout.write(`listening ${(server.address() as { port: number }).port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
