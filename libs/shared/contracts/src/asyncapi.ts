import { createHash } from 'node:crypto';
import type { TSchema } from '@sinclair/typebox';
import { stringify } from 'yaml';
import packageJson from '../package.json' with { type: 'json' };
import {
  CLOUDEVENTS_CONTENT_TYPE,
  EventEnvelopeSchema,
  KAFKA_HEADERS,
  TRACEPARENT_PATTERN,
  createEvent,
} from './envelope.js';
import type { AnyEventDefinition } from './event-definition.js';
import { EVENTS, type EventName } from './registry.js';
import {
  TOPICS,
  TOPIC_PRODUCERS,
  consumersOf,
  type ConsumerGroup,
  type Topic,
  type TopicName,
} from './topics.js';

// The AsyncAPI 3.0 document of every topic and event, generated from the same definitions that
// validate events at runtime. `docs/asyncapi.yaml` is this document; a test keeps it current.

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

export interface AsyncApiDocument {
  asyncapi: '3.0.0';
  info: { title: string; version: string; description: string };
  defaultContentType: string;
  channels: Record<string, JsonObject>;
  operations: Record<string, JsonObject>;
  components: { schemas: Record<string, JsonObject>; messages: Record<string, JsonObject> };
}

const KAFKA_BINDING_VERSION = '0.5.0';
const EXAMPLE_TIME = '2025-01-31T12:00:00.000Z';
const EXAMPLE_TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

// Markdown; one line per paragraph so that YAML folds it cleanly.
const DESCRIPTION = [
  "Events between Vivier's services on Kafka.",
  "Every message is a CloudEvents 1.0 envelope in the Kafka protocol binding's structured mode: the message " +
    'value is the JSON envelope (`specversion`, `id`, `source`, `type`, `time`, `subject`, `datacontenttype`, ' +
    `optional \`traceparent\`/\`tracestate\`, \`data\`) and the header \`content-type\` is \`${CLOUDEVENTS_CONTENT_TYPE}\`. ` +
    'The message key is the id whose events must stay in order (the user for auth and admin events, the chat ' +
    'for chat events, the job for jobs).',
  "`id` is unique per event and is the consumers' idempotency key. `data` is validated by the producer and " +
    'by every consumer. A change that would break a consumer gets a new type version (`.v2`), consumed side ' +
    'by side with the old one until the old one is retired.',
  'A consumer group that fails to handle an event retries it through `<topic>.retry.<group>` with backoff, ' +
    'then parks it on `<topic>.dlq.<group>`.',
].join('\n\n');

/** The AsyncAPI 3.0.0 document of the platform's topics and events. */
export function buildAsyncApiDocument(): AsyncApiDocument {
  const channels: Record<string, JsonObject> = {};
  const operations: Record<string, JsonObject> = {};
  const messages: Record<string, JsonObject> = {};

  for (const [name, definition] of Object.entries(EVENTS) as [EventName, AnyEventDefinition][]) {
    messages[name] = messageOf(name, definition);
  }

  for (const [channelId, topic] of Object.entries(TOPICS) as [TopicName, Topic][]) {
    const eventNames = (Object.entries(EVENTS) as [EventName, AnyEventDefinition][])
      .filter(([, definition]) => definition.topic === topic)
      .map(([name]) => name);
    const channelMessages = Object.fromEntries(
      eventNames.map((name) => [name, { $ref: `#/components/messages/${name}` }]),
    );
    const producer = TOPIC_PRODUCERS[topic];
    const groups = consumersOf(topic);

    channels[channelId] = {
      address: topic,
      title: topic,
      description: `Produced by ${producer}; consumed by ${groups.join(', ') || 'nobody yet'}.`,
      messages: channelMessages,
      bindings: { kafka: { topic, bindingVersion: KAFKA_BINDING_VERSION } },
    };
    if (groups.length > 0) {
      channels[`${channelId}Retry`] = failureChannel(topic, groups, 'retry', channelMessages);
      channels[`${channelId}DeadLetter`] = failureChannel(topic, groups, 'dlq', channelMessages);
    }

    const operationMessages = eventNames.map((name) => ({
      $ref: `#/channels/${channelId}/messages/${name}`,
    }));
    operations[`send${pascal(channelId)}`] = {
      action: 'send',
      channel: { $ref: `#/channels/${channelId}` },
      title: `${producer} publishes on ${topic}`,
      summary: 'Written to the outbox in the transaction of the change, then published by the relay.',
      messages: operationMessages,
    };
    for (const group of groups) {
      operations[`receive${pascal(channelId)}In${pascal(group)}`] = {
        action: 'receive',
        channel: { $ref: `#/channels/${channelId}` },
        title: `${group} consumes ${topic}`,
        summary: 'Idempotent by event id; offsets are committed after the handler transaction.',
        messages: operationMessages,
        bindings: {
          kafka: { groupId: { type: 'string', enum: [group] }, bindingVersion: KAFKA_BINDING_VERSION },
        },
      };
    }
  }

  return {
    asyncapi: '3.0.0',
    info: { title: 'Vivier events', version: packageJson.version, description: DESCRIPTION },
    defaultContentType: CLOUDEVENTS_CONTENT_TYPE,
    channels,
    operations,
    components: {
      schemas: {
        CloudEventEnvelope: jsonSchema(EventEnvelopeSchema),
        KafkaHeaders: {
          type: 'object',
          required: [KAFKA_HEADERS.contentType],
          properties: {
            [KAFKA_HEADERS.contentType]: { type: 'string', const: CLOUDEVENTS_CONTENT_TYPE },
            [KAFKA_HEADERS.traceparent]: {
              type: 'string',
              pattern: TRACEPARENT_PATTERN,
              description: 'W3C Trace Context, the same as the envelope attribute',
            },
            [KAFKA_HEADERS.tracestate]: { type: 'string', description: 'W3C Trace Context vendor state' },
          },
        },
      },
      messages,
    },
  };
}

/** The AsyncAPI document as YAML, as it is committed in `docs/asyncapi.yaml`. */
export function renderAsyncApiYaml(): string {
  const header =
    '# Generated from libs/shared/contracts by `npm run asyncapi -w @vivier/contracts`. Do not edit.\n';
  return (
    header +
    stringify(buildAsyncApiDocument(), {
      lineWidth: 100,
      aliasDuplicateObjects: false,
      // Quote what YAML 1.1 readers (js-yaml, used by much AsyncAPI tooling) would read as dates or booleans.
      version: '1.1',
    })
  );
}

function messageOf(name: EventName, definition: AnyEventDefinition): JsonObject {
  const example = createEvent(definition, definition.example, {
    id: exampleId(definition.type),
    time: EXAMPLE_TIME,
    traceparent: EXAMPLE_TRACEPARENT,
  });
  return {
    name: definition.type,
    title: name,
    summary: definition.description,
    contentType: CLOUDEVENTS_CONTENT_TYPE,
    headers: { $ref: '#/components/schemas/KafkaHeaders' },
    payload: {
      allOf: [
        { $ref: '#/components/schemas/CloudEventEnvelope' },
        {
          type: 'object',
          properties: {
            type: { type: 'string', const: definition.type },
            source: { type: 'string', const: definition.source },
            data: jsonSchema(definition.schema),
          },
        },
      ],
    },
    bindings: {
      kafka: {
        key: { type: 'string', description: definition.keyDescription },
        bindingVersion: KAFKA_BINDING_VERSION,
      },
    },
    examples: [
      {
        name: 'example',
        headers: {
          [KAFKA_HEADERS.contentType]: CLOUDEVENTS_CONTENT_TYPE,
          [KAFKA_HEADERS.traceparent]: EXAMPLE_TRACEPARENT,
        },
        payload: toJson(example),
      },
    ],
  };
}

function failureChannel(
  topic: Topic,
  groups: ConsumerGroup[],
  kind: 'retry' | 'dlq',
  messages: JsonObject,
): JsonObject {
  // The same shape as retryTopic() / deadLetterTopic(); a test checks that they agree.
  const address = `${topic}.${kind}.{group}`;
  return {
    address,
    title: address,
    description:
      kind === 'retry'
        ? `Events of ${topic} that a consumer group failed to handle, waiting for another attempt (attempt count in a header).`
        : `Events of ${topic} that a consumer group gave up on after its retries, with the error, for operators.`,
    parameters: { group: { enum: groups, description: 'the consumer group that failed' } },
    messages,
  };
}

function pascal(name: string): string {
  return name.charAt(0).toUpperCase() + name.slice(1);
}

/** A stable UUID (v4 layout) derived from a name, so examples keep their ids between generations. */
function exampleId(name: string): string {
  const hex = createHash('sha256').update(name).digest('hex');
  const variant = ((parseInt(hex.charAt(16), 16) & 0x3) | 0x8).toString(16);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-${variant}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

function toJson(value: unknown): JsonValue {
  // Drops TypeBox's symbol keys and undefined members.
  return JSON.parse(JSON.stringify(value)) as JsonValue;
}

/** A TypeBox schema as plain JSON Schema, with unions of string constants written as `enum`. */
function jsonSchema(schema: TSchema): JsonObject {
  return simplify(toJson(schema)) as JsonObject;
}

function simplify(value: JsonValue): JsonValue {
  if (Array.isArray(value)) return value.map(simplify);
  if (value === null || typeof value !== 'object') return value;
  const { anyOf, ...rest } = value;
  if (Array.isArray(anyOf) && anyOf.length > 0 && anyOf.every(isStringConst)) {
    return simplify({
      type: 'string',
      enum: anyOf.map((branch) => (branch as JsonObject).const ?? null),
      ...rest,
    });
  }
  return Object.fromEntries(Object.entries(value).map(([key, child]) => [key, simplify(child)]));
}

function isStringConst(value: JsonValue): boolean {
  return (
    typeof value === 'object' && value !== null && !Array.isArray(value) && typeof value.const === 'string'
  );
}
