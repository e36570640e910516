// Writes docs/asyncapi.yaml from the event definitions:
//   node --import tsx libs/shared/contracts/src/generate-asyncapi.ts   (or: npm run asyncapi -w @vivier/contracts)
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { renderAsyncApiYaml } from './asyncapi.js';

const target = fileURLToPath(new URL('../../../../docs/asyncapi.yaml', import.meta.url));
writeFileSync(target, renderAsyncApiYaml());
console.log(`wrote ${target}`);
