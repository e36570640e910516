import net from 'node:net';

/**
 * Ports handed out come from below Linux's ephemeral range (32768-60999 by default). A port the
 * OS picked (bind to 0) is free when picked, but is closed again until the process it is for binds
 * it; meanwhile the OS could give the same number to anything that binds to 0 (the dev Kafka
 * broker, s3rver) or to the local end of any outgoing connection. Once, a worker found its port
 * taken by the broker started after it was picked.
 */
const FIRST = 20_000;
const LAST = 32_767;
/** Ports this process handed out lately: not handed out again while their process may still be starting. */
const recent: number[] = [];
const RECENT = 512;

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A loopback TCP port free right now, outside the ephemeral range, for a process a test or benchmark starts. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = FIRST + Math.floor(Math.random() * (LAST - FIRST + 1));
    if (recent.includes(port)) continue;
    // Taken before the check, so two calls at once never get the same one.
    recent.push(port);
    if (recent.length > RECENT) recent.shift();
    if (await bindable(port)) return port;
    const at = recent.indexOf(port);
    if (at >= 0) recent.splice(at, 1);
  }
  throw new Error(`no free port between ${FIRST} and ${LAST} after 200 tries`);
}
