// Dev entry point: `node --import tsx tools/dev-kafka/src/cli.ts [--brokers N] [--topics a:4,b:4]
// [--control-port P]`. Prints KAFKA_BROKERS=... (and CONTROL_URL=...) as env-style lines so a
// launcher script can `eval`/parse them; runs until SIGINT/SIGTERM.
import { parseArgs } from 'node:util';
import { startControlServer, startDevKafka } from './index';
import type { ControlServer, DevKafkaTopic } from './index';

function fail(message: string): never {
  console.error(`dev-kafka: ${message}`);
  process.exit(2);
}

function parseTopics(spec: string | undefined): DevKafkaTopic[] {
  if (!spec) return [];
  return spec
    .split(',')
    .filter(Boolean)
    .map((item) => {
      const m = /^([^:]+)(?::(\d+))?$/.exec(item.trim());
      if (!m) fail(`bad --topics entry "${item}" (want name:partitions)`);
      return { name: m[1]!, partitions: m[2] ? Number(m[2]) : 1 };
    });
}

function parseIntArg(
  name: string,
  value: string | undefined,
  fallback: number | undefined,
): number | undefined {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) fail(`--${name} must be a non-negative integer`);
  return Number(value);
}

async function main(): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        brokers: { type: 'string' },
        topics: { type: 'string' },
        'control-port': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    fail((err as Error).message);
  }
  if (values.help) {
    console.log('usage: cli.ts [--brokers N] [--topics a:4,b:4] [--control-port P (0 = ephemeral)]');
    return;
  }
  const brokers = parseIntArg('brokers', values.brokers, 1)!;
  const controlPort = parseIntArg('control-port', values['control-port'], undefined);

  const kafka = await startDevKafka({
    brokers,
    topics: parseTopics(values.topics),
    onLog: (line) => console.error(line),
  });
  let control: ControlServer | undefined;
  let shuttingDown = false;
  const shutdown = async (code: number): Promise<void> => {
    if (shuttingDown) return;
    shuttingDown = true;
    await control?.close().catch(() => {});
    await kafka.stop().catch(() => {});
    process.exit(code);
  };
  process.on('SIGINT', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));
  void kafka.exited.then((info) => {
    if (!info.expected && !shuttingDown) {
      console.error(`dev-kafka: mock broker died (code ${String(info.code)}, signal ${String(info.signal)})`);
      void shutdown(1);
    }
  });

  console.log(`KAFKA_BROKERS=${kafka.bootstrap.join(',')}`);
  if (controlPort !== undefined) {
    try {
      control = await startControlServer(kafka, controlPort);
    } catch (err) {
      console.error(`dev-kafka: control server failed: ${(err as Error).message}`);
      await shutdown(1);
      return;
    }
    console.log(`CONTROL_URL=${control.url}`);
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
