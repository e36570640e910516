/**
 * The upstream of the gateway benchmark, as its own process: a trivial service route
 * (`GET /api/v1/models` → a small JSON body) and auth's JWKS, on plain node:http.
 */
import http from 'node:http';

const jwks = process.env.STUB_JWKS ?? '{"keys":[]}';
const body = JSON.stringify({ items: [{ id: 'sim/echo', provider: 'sim', contextWindow: 8192 }] });

const server = http.createServer((req, res) => {
  if (req.url === '/api/v1/models') {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    return res.end(body);
  }
  if (req.url === '/.well-known/jwks.json') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(jwks);
  }
  if (req.url === '/ready' || req.url === '/openapi.json') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end('{"status":"ready","checks":{}}');
  }
  res.writeHead(404).end();
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  process.stdout.write(`listening ${(server.address() as { port: number }).port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
