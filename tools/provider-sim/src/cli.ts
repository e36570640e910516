// Stand-alone simulator for `npm start`-style use and manual poking:
//   node --import tsx tools/provider-sim/src/cli.ts --port 8090 [--host 127.0.0.1]
//        [--no-auth] [--faults '{"latencyMs":200,"tokensPerSecond":40}']
// Prints PROVIDER_SIM_URL=... once listening, so scripts can capture the address.
import { parseArgs } from 'node:util';
import { parseFaults } from './faults.js';
import { startProviderSim } from './server.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.PROVIDER_SIM_PORT ?? '0' },
    host: { type: 'string', default: process.env.PROVIDER_SIM_HOST ?? '127.0.0.1' },
    'no-auth': { type: 'boolean', default: false },
    faults: { type: 'string' },
    'log-size': { type: 'string' },
  },
  strict: true,
});

const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`provider-sim: invalid --port ${values.port}`);
  process.exit(2);
}

let faults;
try {
  faults = values.faults ? parseFaults(JSON.parse(values.faults)) : undefined;
} catch (e) {
  console.error(`provider-sim: invalid --faults: ${(e as Error).message}`);
  process.exit(2);
}

const sim = await startProviderSim({
  port,
  host: values.host,
  requireAuth: !values['no-auth'],
  faults,
  logSize: values['log-size'] ? Number(values['log-size']) : undefined,
});
console.log(`PROVIDER_SIM_URL=${sim.url}`);

let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  void sim.close().then(() => process.exit(0));
  // Streams stalled on purpose must not keep a shutdown waiting.
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
