import { describe, expect, it } from 'vitest';
import { allTopics } from '@vivier/contracts';
import { readTopicsFile, renderTopicsFile } from './topics';

describe('infra/kafka/topics.txt', () => {
  it('lists exactly the topics of allTopics() (regenerate: npm run topics -w @vivier/infra-checks)', async () => {
    expect(await readTopicsFile()).toBe(renderTopicsFile());
  });

  it('has one "<name> <partitions>" line per topic, names Kafka accepts', async () => {
    const lines = (await readTopicsFile()).split('\n').filter((l) => l && !l.startsWith('#'));
    expect(lines).toHaveLength(allTopics().length);
    for (const line of lines) expect(line).toMatch(/^[a-zA-Z0-9._-]{1,249} [1-9]\d*$/);
    expect(new Set(lines.map((l) => l.split(' ')[0])).size).toBe(lines.length);
  });
});
