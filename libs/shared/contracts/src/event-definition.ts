import type { Static, TObject } from '@sinclair/typebox';
import { EVENT_SOURCES, TOPIC_PRODUCERS, type EventSource, type Topic } from './topics.js';

/** `vivier.<area>.<entity>.<action>.v<n>`, e.g. `vivier.chat.message.completed.v1`. */
export const EVENT_TYPE_PATTERN = /^vivier\.[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\.v[1-9][0-9]*$/;

/** The CloudEvents `source` of the service that produces a topic. */
export type SourceOfTopic<T extends Topic> = (typeof EVENT_SOURCES)[(typeof TOPIC_PRODUCERS)[T]];

export interface EventDefinition<
  TType extends string = string,
  TSchema extends TObject = TObject,
  TTopic extends Topic = Topic,
  TSource extends EventSource = EventSource,
> {
  /** CloudEvents `type`. Never changes: a breaking change is a new type ending in `.v<n+1>`. */
  readonly type: TType;
  readonly topic: TTopic;
  /** CloudEvents `source`: the producing service, derived from the topic. */
  readonly source: TSource;
  /** The payload (`data`) schema. */
  readonly schema: TSchema;
  readonly description: string;
  /** The Kafka message key: the id whose events must stay in order. */
  key(data: Static<TSchema>): string;
  /** What the key is, for the AsyncAPI document. */
  readonly keyDescription: string;
  /** CloudEvents `subject`: the id of the entity the event is about. */
  subject(data: Static<TSchema>): string;
  /** A valid payload, used in the AsyncAPI document and by the tests. */
  readonly example: Static<TSchema>;
}

// Method syntax above keeps `key`/`subject` bivariant, so every definition is assignable to this.
export type AnyEventDefinition = EventDefinition<string, TObject, Topic, EventSource>;

export type EventData<D extends AnyEventDefinition> = Static<D['schema']>;

/** What `defineEvent` is given: everything but the source, which follows from the topic. */
export interface EventDefinitionInput<TType extends string, TSchema extends TObject, TTopic extends Topic> {
  type: TType;
  topic: TTopic;
  schema: TSchema;
  description: string;
  key(data: Static<TSchema>): string;
  keyDescription: string;
  subject(data: Static<TSchema>): string;
  example: Static<TSchema>;
}

/** Declares an event. Its type must follow EVENT_TYPE_PATTERN. */
export function defineEvent<const TType extends string, TSchema extends TObject, TTopic extends Topic>(
  definition: EventDefinitionInput<TType, TSchema, TTopic>,
): EventDefinition<TType, TSchema, TTopic, SourceOfTopic<TTopic>> {
  if (!EVENT_TYPE_PATTERN.test(definition.type)) {
    throw new Error(`Event type ${definition.type} does not match ${String(EVENT_TYPE_PATTERN)}`);
  }
  const source = EVENT_SOURCES[TOPIC_PRODUCERS[definition.topic]] as SourceOfTopic<TTopic>;
  return Object.freeze({ ...definition, source });
}
