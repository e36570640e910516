import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { buildAsyncApiDocument, renderAsyncApiYaml, type JsonValue } from './asyncapi.js';
import { parseEvent } from './envelope.js';
import { EVENTS, EVENT_DEFINITIONS } from './registry.js';
import { SUBSCRIPTIONS, TOPICS, deadLetterTopic, retryTopic, type ConsumerGroup } from './topics.js';

const DOCUMENT_PATH = fileURLToPath(new URL('../../../../docs/asyncapi.yaml', import.meta.url));
const REGENERATE =
  'npm run asyncapi -w @vivier/contracts (or: node --import tsx libs/shared/contracts/src/generate-asyncapi.ts)';

type Json = { [key: string]: JsonValue };

function resolve(document: unknown, ref: string): unknown {
  expect(ref.startsWith('#/'), ref).toBe(true);
  return ref
    .slice(2)
    .split('/')
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce<unknown>((node, part) => (node as Record<string, unknown> | undefined)?.[part], document);
}

function refsOf(node: unknown): string[] {
  if (Array.isArray(node)) return node.flatMap(refsOf);
  if (node === null || typeof node !== 'object') return [];
  return Object.entries(node).flatMap(([key, value]) =>
    key === '$ref' && typeof value === 'string' ? [value] : refsOf(value),
  );
}

describe('AsyncAPI document', () => {
  const document = buildAsyncApiDocument();

  it('docs/asyncapi.yaml is up to date', () => {
    let committed = '';
    try {
      committed = readFileSync(DOCUMENT_PATH, 'utf8');
    } catch {
      expect.fail(`${DOCUMENT_PATH} is missing. Generate it with: ${REGENERATE}`);
    }
    if (committed !== renderAsyncApiYaml()) {
      expect.fail(
        `docs/asyncapi.yaml is out of date with the event definitions. Regenerate it with: ${REGENERATE}`,
      );
    }
    expect(parse(committed)).toEqual(JSON.parse(JSON.stringify(document)));
  });

  it('is AsyncAPI 3.0.0 with a channel per topic', () => {
    expect(document.asyncapi).toBe('3.0.0');
    expect(document.info.title).toBe('Vivier events');
    for (const [id, topic] of Object.entries(TOPICS)) {
      expect(document.channels[id]?.address).toBe(topic);
    }
    const messageCount = Object.keys(document.components.messages).length;
    expect(messageCount).toBe(EVENT_DEFINITIONS.length);
  });

  it('resolves every $ref', () => {
    const refs = refsOf(document);
    expect(refs.length).toBeGreaterThan(100);
    for (const ref of refs) expect(resolve(document, ref), ref).toBeDefined();
  });

  it('uses keys that AsyncAPI allows', () => {
    const keys = [
      ...Object.keys(document.channels),
      ...Object.keys(document.operations),
      ...Object.keys(document.components.messages),
      ...Object.keys(document.components.schemas),
    ];
    for (const key of keys) expect(key).toMatch(/^[A-Za-z0-9_.-]+$/);
  });

  it('has a send operation per topic and a receive operation per subscription', () => {
    const operations = Object.values(document.operations) as Json[];
    const channelOf = (op: Json) => resolve(document, (op.channel as Json).$ref as string) as Json;
    const sends = operations.filter((op) => op.action === 'send').map((op) => channelOf(op).address);
    expect(sends).toEqual(Object.values(TOPICS));

    const receives = operations
      .filter((op) => op.action === 'receive')
      .map((op) => {
        const kafka = (op.bindings as Json).kafka as Json;
        const group = ((kafka.groupId as Json).enum as string[])[0];
        return `${group} <- ${String(channelOf(op).address)}`;
      })
      .sort();
    const expected = Object.entries(SUBSCRIPTIONS)
      .flatMap(([group, topics]) => topics.map((topic) => `${group} <- ${topic}`))
      .sort();
    expect(receives).toEqual(expected);

    for (const op of operations) {
      const channel = channelOf(op);
      for (const message of op.messages as Json[]) {
        const ref = message.$ref as string;
        expect(ref.startsWith(`${(op.channel as Json).$ref as string}/messages/`), ref).toBe(true);
        expect(resolve(document, ref)).toBeDefined();
      }
      expect((op.messages as Json[]).length).toBe(Object.keys(channel.messages as Json).length);
    }
  });

  it('describes retry and dead-letter topics with the names consumers use', () => {
    for (const [id, topic] of Object.entries(TOPICS)) {
      const retry = document.channels[`${id}Retry`];
      const deadLetter = document.channels[`${id}DeadLetter`];
      const groups = (retry?.parameters as Json).group as Json;
      for (const group of groups.enum as ConsumerGroup[]) {
        expect(String(retry?.address).replace('{group}', group)).toBe(retryTopic(topic, group));
        expect(String(deadLetter?.address).replace('{group}', group)).toBe(deadLetterTopic(topic, group));
      }
    }
  });

  it('gives each message the envelope, the payload schema, headers, key and a valid example', () => {
    const message = document.components.messages.chatMessageCompleted as Json;
    expect(message.name).toBe('vivier.chat.message.completed.v1');
    expect(message.contentType).toBe('application/cloudevents+json');
    const headers = resolve(document, (message.headers as Json).$ref as string) as Json;
    expect(Object.keys(headers.properties as Json)).toEqual(['content-type', 'traceparent', 'tracestate']);
    const [envelope, specific] = (message.payload as Json).allOf as Json[];
    expect(envelope).toEqual({ $ref: '#/components/schemas/CloudEventEnvelope' });
    const data = (specific!.properties as Json).data as Json;
    expect(data.additionalProperties).toBe(false);
    expect((data.properties as Json).status).toEqual({
      type: 'string',
      enum: ['completed', 'cancelled', 'failed'],
      description: 'final status of a reply',
    });
    expect(((message.bindings as Json).kafka as Json).key).toEqual({
      type: 'string',
      description: EVENTS.chatMessageCompleted.keyDescription,
    });

    for (const [name, definition] of Object.entries(EVENTS)) {
      const example = ((document.components.messages[name] as Json).examples as Json[])[0]!;
      const event = parseEvent(example.payload);
      expect(event.type).toBe(definition.type);
    }
  });
});
