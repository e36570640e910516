import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ROOT } from './paths';
import { TOPICS_FILE, renderTopicsFile } from './topics';

// `npm run topics -w @vivier/infra-checks`: rewrites infra/kafka/topics.txt from the contracts.
await writeFile(TOPICS_FILE, renderTopicsFile());
process.stdout.write(`wrote ${path.relative(ROOT, TOPICS_FILE)}\n`);
