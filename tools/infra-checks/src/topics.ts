import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { allTopics } from '@vivier/contracts';
import { ROOT } from './paths';

export const TOPICS_FILE = path.join(ROOT, 'infra', 'kafka', 'topics.txt');

/**
 * infra/kafka/topics.txt: every topic of `allTopics()` as `<name> <partitions>`, one a line. The
 * one-shot `kafka-topics` service of docker-compose.yml creates them; operators of another Kafka
 * create the same list.
 */
export function renderTopicsFile(): string {
  const lines = allTopics().map((t) => `${t.name} ${t.partitions}`);
  return [
    '# Every Kafka topic of Vivier: <name> <partitions>. Generated from allTopics() of',
    '# libs/shared/contracts by `npm run topics -w @vivier/infra-checks`; do not edit.',
    '# Main topics, then per consumer group a retry (.retry.<group>) and a dead-letter (.dlq.<group>) topic.',
    ...lines,
    '',
  ].join('\n');
}

export async function readTopicsFile(): Promise<string> {
  return readFile(TOPICS_FILE, 'utf8');
}
