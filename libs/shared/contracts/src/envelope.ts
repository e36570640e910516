import { randomUUID } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import type { AnyEventDefinition, EventData } from './event-definition.js';
import { Timestamp, Uuid } from './events/common.schema.js';
import {
  getEventDefinition,
  type AnyEvent,
  type EventOf,
  type EventOnTopic,
  type KnownEventDefinition,
} from './registry.js';
import type { EventSource, Topic } from './topics.js';
import { EventValidationError, UnknownEventTypeError, validate, type ValidationIssue } from './validation.js';

// CloudEvents 1.0 in the Kafka protocol binding's structured mode: the Kafka message value is the
// whole JSON envelope below, with the header `content-type: application/cloudevents+json`.

export const CLOUDEVENTS_SPEC_VERSION = '1.0';
export const CLOUDEVENTS_CONTENT_TYPE = 'application/cloudevents+json';
export const DATA_CONTENT_TYPE = 'application/json';

/** Kafka header names. */
export const KAFKA_HEADERS = {
  contentType: 'content-type',
  traceparent: 'traceparent',
  tracestate: 'tracestate',
} as const;

/** W3C Trace Context `traceparent` (version 00, or a later version with more fields). */
export const TRACEPARENT_PATTERN = '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[0-9a-f-]+)?$';

/**
 * The envelope. Unknown extension attributes are tolerated (CloudEvents lets producers add them);
 * `data` is checked against the schema of the event type.
 */
export const EventEnvelopeSchema = Type.Object(
  {
    specversion: Type.Literal(CLOUDEVENTS_SPEC_VERSION),
    id: Uuid('unique per event; consumers use it as the idempotency key'),
    source: Type.String({
      minLength: 1,
      maxLength: 256,
      description: 'the producing service, e.g. vivier/auth',
    }),
    type: Type.String({ minLength: 1, maxLength: 256, description: 'e.g. vivier.chat.message.completed.v1' }),
    time: Timestamp('when it happened (UTC)'),
    subject: Type.String({
      minLength: 1,
      maxLength: 256,
      description: 'id of the entity the event is about',
    }),
    datacontenttype: Type.Literal(DATA_CONTENT_TYPE),
    traceparent: Type.Optional(
      Type.String({ pattern: TRACEPARENT_PATTERN, description: 'W3C Trace Context of the producing span' }),
    ),
    tracestate: Type.Optional(Type.String({ maxLength: 512, description: 'W3C Trace Context vendor state' })),
    data: Type.Unknown({ description: 'the payload of the event type' }),
  },
  { description: 'CloudEvents 1.0 envelope (structured mode)' },
);

export interface EventEnvelope<
  TType extends string = string,
  TData = unknown,
  TSource extends EventSource = EventSource,
> {
  specversion: typeof CLOUDEVENTS_SPEC_VERSION;
  id: string;
  source: TSource;
  type: TType;
  time: string;
  subject: string;
  datacontenttype: typeof DATA_CONTENT_TYPE;
  traceparent?: string;
  tracestate?: string;
  data: TData;
}

export interface CreateEventOptions {
  /** Defaults to a random UUID. An outbox row keeps the id it was created with. */
  id?: string;
  /** When it happened; defaults to now. A Date or a UTC ISO string. */
  time?: Date | string;
  /** Defaults to the definition's subject of the data. */
  subject?: string;
  traceparent?: string;
  tracestate?: string;
}

/**
 * Builds an event of a definition, after checking `data` against its schema.
 * Throws EventValidationError naming each failing field (`/data/usage/promptTokens`, ...).
 */
export function createEvent<D extends AnyEventDefinition>(
  definition: D,
  data: EventData<D>,
  options: CreateEventOptions = {},
): EventOf<D> {
  const dataIssues = validate(definition.schema, data, '/data');
  if (dataIssues.length > 0) throw new EventValidationError(definition.type, dataIssues);

  const time = options.time ?? new Date();
  let isoTime: string;
  if (typeof time === 'string') {
    isoTime = time;
  } else if (Number.isNaN(time.getTime())) {
    throw new EventValidationError(definition.type, [{ path: '/time', message: 'Invalid Date' }]);
  } else {
    isoTime = time.toISOString();
  }

  const event: EventOf<D> = {
    specversion: CLOUDEVENTS_SPEC_VERSION,
    id: options.id ?? randomUUID(),
    source: definition.source,
    type: definition.type,
    time: isoTime,
    subject: options.subject ?? definition.subject(data),
    datacontenttype: DATA_CONTENT_TYPE,
    ...(options.traceparent === undefined ? {} : { traceparent: options.traceparent }),
    ...(options.tracestate === undefined ? {} : { tracestate: options.tracestate }),
    data,
  };
  const envelopeIssues = validate(EventEnvelopeSchema, event);
  if (envelopeIssues.length > 0) throw new EventValidationError(definition.type, envelopeIssues);
  return event;
}

export interface ParseEventOptions<T extends Topic = Topic> {
  /** The topic the event was read from (the main topic, also for its retry topic): its type must belong there. */
  topic?: T;
}

/**
 * Checks an event read from Kafka: the envelope, that its type is known, that its source is the
 * type's producer (and that it belongs on `topic`, if given), then `data` against the type's schema.
 * Accepts the parsed JSON, a JSON string, or the raw bytes of the Kafka message value.
 *
 * Throws UnknownEventTypeError for a well-formed event of an unknown type, EventValidationError
 * for anything else that does not match.
 */
export function parseEvent(raw: unknown): AnyEvent;
export function parseEvent<T extends Topic>(
  raw: unknown,
  options: ParseEventOptions<T> & { topic: T },
): EventOnTopic<T>;
export function parseEvent(raw: unknown, options?: ParseEventOptions): AnyEvent;
export function parseEvent(raw: unknown, options: ParseEventOptions = {}): AnyEvent {
  const value = decode(raw);
  const rawType = isRecord(value) && typeof value.type === 'string' ? value.type : undefined;

  const envelopeIssues = validate(EventEnvelopeSchema, value);
  if (envelopeIssues.length > 0) throw new EventValidationError(rawType, envelopeIssues);
  const envelope = value as EventEnvelope;

  const definition: KnownEventDefinition | undefined = getEventDefinition(envelope.type);
  if (!definition) throw new UnknownEventTypeError(envelope.type);

  const issues: ValidationIssue[] = [];
  if (envelope.source !== definition.source) {
    issues.push({
      path: '/source',
      message: `Expected ${JSON.stringify(definition.source)} for ${definition.type}`,
    });
  }
  if (options.topic !== undefined && options.topic !== definition.topic) {
    issues.push({
      path: '/type',
      message: `${definition.type} belongs on ${definition.topic}, not ${options.topic}`,
    });
  }
  issues.push(...validate(definition.schema, envelope.data, '/data'));
  if (issues.length > 0) throw new EventValidationError(definition.type, issues);
  return envelope as AnyEvent;
}

/** Narrows an event to one definition. */
export function isEventOf<D extends AnyEventDefinition>(
  event: EventEnvelope,
  definition: D,
): event is EventOf<D> {
  return event.type === definition.type;
}

export interface KafkaRecord {
  topic: Topic;
  key: string;
  /** The JSON envelope (structured mode). */
  value: string;
  headers: Record<string, string>;
}

/** The Kafka message of an event: its topic, its key (the id whose order matters), value and headers. */
export function toKafkaRecord(event: AnyEvent): KafkaRecord {
  const definition: KnownEventDefinition | undefined = getEventDefinition(event.type);
  if (!definition) throw new UnknownEventTypeError(event.type);
  const headers: Record<string, string> = { [KAFKA_HEADERS.contentType]: CLOUDEVENTS_CONTENT_TYPE };
  if (event.traceparent !== undefined) headers[KAFKA_HEADERS.traceparent] = event.traceparent;
  if (event.tracestate !== undefined) headers[KAFKA_HEADERS.tracestate] = event.tracestate;
  return {
    topic: definition.topic,
    key: (definition as AnyEventDefinition).key(event.data),
    value: JSON.stringify(event),
    headers,
  };
}

const textDecoder = new TextDecoder('utf-8', { fatal: true });

function decode(raw: unknown): unknown {
  if (typeof raw !== 'string' && !(raw instanceof Uint8Array)) return raw;
  try {
    return JSON.parse(typeof raw === 'string' ? raw : textDecoder.decode(raw)) as unknown;
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new EventValidationError(undefined, [{ path: '', message: `Not a JSON document: ${reason}` }]);
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
