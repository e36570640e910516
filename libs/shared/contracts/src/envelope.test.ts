import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  CLOUDEVENTS_CONTENT_TYPE,
  createEvent,
  isEventOf,
  parseEvent,
  toKafkaRecord,
  type EventEnvelope,
} from './envelope.js';
import { EVENTS, EVENT_DEFINITIONS, type AnyEvent, type EventOf } from './registry.js';
import { isUuid } from './formats.js';
import { eventModelId, MODEL_ID_MAX_LENGTH } from './events/common.schema.js';
import { EventContractError, EventValidationError, UnknownEventTypeError } from './validation.js';

const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const completed = EVENTS.chatMessageCompleted;

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

describe('createEvent', () => {
  it('builds a CloudEvents 1.0 envelope', () => {
    const before = Date.now();
    const event = createEvent(completed, completed.example);
    expect(event).toMatchObject({
      specversion: '1.0',
      source: 'vivier/chat',
      type: 'vivier.chat.message.completed.v1',
      subject: completed.example.messageId,
      datacontenttype: 'application/json',
      data: completed.example,
    });
    expect(isUuid(event.id)).toBe(true);
    expect(event.time).toMatch(/Z$/);
    expect(Date.parse(event.time)).toBeGreaterThanOrEqual(before - 1);
    expect(event).not.toHaveProperty('traceparent');
    expect(createEvent(completed, completed.example).id).not.toBe(event.id);
  });

  it('takes id, time, subject and trace context', () => {
    const event = createEvent(EVENTS.jobsExportRequested, EVENTS.jobsExportRequested.example, {
      id: '0f8fad5b-d9cb-469f-a165-70867728950e',
      time: new Date('2025-03-01T10:00:00Z'),
      subject: 'custom-subject',
      traceparent: TRACEPARENT,
      tracestate: 'vendor=1',
    });
    expect(event).toMatchObject({
      id: '0f8fad5b-d9cb-469f-a165-70867728950e',
      time: '2025-03-01T10:00:00.000Z',
      subject: 'custom-subject',
      traceparent: TRACEPARENT,
      tracestate: 'vendor=1',
      source: 'vivier/chat',
    });
  });

  it('throws an error naming the failing field of the data', () => {
    const error = thrown(() =>
      createEvent(completed, { ...completed.example, usage: { promptTokens: 1, completionTokens: -1 } }),
    );
    expect(error).toBeInstanceOf(EventValidationError);
    expect(error).toBeInstanceOf(EventContractError);
    expect((error as EventValidationError).type).toBe('vivier.chat.message.completed.v1');
    expect((error as EventValidationError).issues).toEqual([
      { path: '/data/usage/completionTokens', message: 'Expected integer to be greater or equal to 0' },
    ]);
    expect((error as Error).message).toBe(
      'Invalid vivier.chat.message.completed.v1: /data/usage/completionTokens: Expected integer to be greater or equal to 0',
    );
    expect((error as Error).name).toBe('EventValidationError');
  });

  it('refuses bad envelope options', () => {
    const data = EVENTS.jobsExportRequested.example;
    expect(() => createEvent(EVENTS.jobsExportRequested, data, { traceparent: 'abc' })).toThrow(
      /\/traceparent/,
    );
    expect(() => createEvent(EVENTS.jobsExportRequested, data, { id: 'not-a-uuid' })).toThrow(/\/id/);
    expect(() =>
      createEvent(EVENTS.jobsExportRequested, data, { time: '2025-03-01T10:00:00+01:00' }),
    ).toThrow(/\/time/);
    expect(() => createEvent(EVENTS.jobsExportRequested, data, { time: new Date('nope') })).toThrow(/\/time/);
  });

  it('type-checks the data against the definition', () => {
    const event = createEvent(EVENTS.adminQuotaSet, EVENTS.adminQuotaSet.example);
    expectTypeOf(event).toEqualTypeOf<EventOf<typeof EVENTS.adminQuotaSet>>();
    expectTypeOf(event.type).toEqualTypeOf<'vivier.admin.quota.set.v1'>();
    expectTypeOf(event.data.monthlyTokens).toEqualTypeOf<number | null>();
    expect(() =>
      // @ts-expect-error monthlyTokens must be a number or null
      createEvent(EVENTS.adminQuotaSet, { ...EVENTS.adminQuotaSet.example, monthlyTokens: 'lots' }),
    ).toThrow(EventValidationError);
    expect(() =>
      // @ts-expect-error status is a closed set
      createEvent(completed, { ...completed.example, status: 'done' }),
    ).toThrow(EventValidationError);
  });
});

describe('parseEvent', () => {
  it('round-trips every event through its Kafka record', () => {
    for (const definition of EVENT_DEFINITIONS) {
      const event = createEvent(definition, definition.example, { traceparent: TRACEPARENT });
      const record = toKafkaRecord(event as AnyEvent);
      expect(record.topic).toBe(definition.topic);
      expect(record.headers).toEqual({ 'content-type': CLOUDEVENTS_CONTENT_TYPE, traceparent: TRACEPARENT });
      expect(parseEvent(Buffer.from(record.value))).toEqual(event);
      expect(parseEvent(record.value)).toEqual(event);
      expect(parseEvent(JSON.parse(record.value))).toEqual(event);
    }
  });

  it('returns a union discriminated by type', () => {
    const event = parseEvent(JSON.stringify(createEvent(completed, completed.example)));
    expectTypeOf(event).toEqualTypeOf<AnyEvent>();
    if (event.type === 'vivier.chat.message.completed.v1') {
      expectTypeOf(event.data.usage.promptTokens).toEqualTypeOf<number>();
      expect(event.data.usage.promptTokens).toBe(412);
    } else {
      expect.fail('wrong type');
    }
    const narrowed: EventEnvelope = event;
    expect(isEventOf(narrowed, completed)).toBe(true);
    expect(isEventOf(narrowed, EVENTS.chatCreated)).toBe(false);
  });

  it('checks the topic when given', () => {
    const raw = JSON.stringify(createEvent(completed, completed.example));
    const event = parseEvent(raw, { topic: 'chat.events' });
    expectTypeOf(event.source).toEqualTypeOf<'vivier/chat'>();
    const error = thrown(() => parseEvent(raw, { topic: 'worker.events' }));
    expect(error).toBeInstanceOf(EventValidationError);
    expect((error as EventValidationError).issues).toEqual([
      {
        path: '/type',
        message: 'vivier.chat.message.completed.v1 belongs on chat.events, not worker.events',
      },
    ]);
  });

  it('throws UnknownEventTypeError for a well-formed event of an unknown type', () => {
    const event = { ...createEvent(completed, completed.example), type: 'vivier.chat.message.completed.v2' };
    const error = thrown(() => parseEvent(event));
    expect(error).toBeInstanceOf(UnknownEventTypeError);
    expect(error).toBeInstanceOf(EventContractError);
    expect(error).not.toBeInstanceOf(EventValidationError);
    expect((error as UnknownEventTypeError).type).toBe('vivier.chat.message.completed.v2');
  });

  it('throws EventValidationError with every issue of the data', () => {
    const event = createEvent(completed, completed.example);
    const bad = { ...event, data: { ...event.data, chatId: 'x', status: 'done', extra: 1 } };
    const error = thrown(() => parseEvent(bad)) as EventValidationError;
    expect(error).toBeInstanceOf(EventValidationError);
    expect(error.type).toBe('vivier.chat.message.completed.v1');
    expect(error.issues).toEqual([
      { path: '/data/extra', message: 'Unexpected property' },
      { path: '/data/chatId', message: "Expected string to match 'uuid' format" },
      { path: '/data/status', message: 'Expected one of "completed", "cancelled", "failed"' },
    ]);
  });

  it('checks the envelope', () => {
    const event = createEvent(completed, completed.example);
    const cases: [unknown, string][] = [
      [{ ...event, specversion: '0.3' }, '/specversion'],
      [{ ...event, id: undefined }, '/id'],
      [{ ...event, id: 'abc' }, '/id'],
      [{ ...event, time: 'yesterday' }, '/time'],
      [{ ...event, datacontenttype: 'text/plain' }, '/datacontenttype'],
      [{ ...event, subject: '' }, '/subject'],
      [{ ...event, source: 'vivier/worker' }, '/source'],
      [{ ...event, traceparent: 'xyz' }, '/traceparent'],
      [(({ data: _data, ...rest }) => rest)(event), '/data'],
      [[event], ''],
      [null, ''],
    ];
    for (const [raw, path] of cases) {
      const error = thrown(() => parseEvent(raw));
      expect(error, path).toBeInstanceOf(EventValidationError);
      expect((error as EventValidationError).issues[0]?.path, JSON.stringify(raw)).toBe(path);
    }
  });

  it('tolerates CloudEvents extension attributes', () => {
    const event = { ...createEvent(completed, completed.example), partitionkey: 'abc' };
    expect(parseEvent(event)).toEqual(event);
  });

  it('refuses bytes that are not JSON', () => {
    const error = thrown(() => parseEvent(Buffer.from('{"specversion":')));
    expect(error).toBeInstanceOf(EventValidationError);
    expect((error as EventValidationError).type).toBeUndefined();
    expect((error as Error).message).toMatch(/Not a JSON document/);
    expect(() => parseEvent(new Uint8Array([0xff, 0xfe]))).toThrow(EventValidationError);
  });
});

describe('toKafkaRecord', () => {
  it('keys each event by the id whose order matters', () => {
    const chat = createEvent(EVENTS.chatCreated, EVENTS.chatCreated.example);
    expect(toKafkaRecord(chat).key).toBe(EVENTS.chatCreated.example.chatId);
    const login = createEvent(EVENTS.authUserLoggedIn, EVENTS.authUserLoggedIn.example);
    expect(toKafkaRecord(login)).toMatchObject({
      topic: 'auth.events',
      key: EVENTS.authUserLoggedIn.example.userId,
    });
    const job = createEvent(EVENTS.jobsCompletionRequested, EVENTS.jobsCompletionRequested.example);
    expect(toKafkaRecord(job)).toMatchObject({
      topic: 'jobs.completion',
      key: EVENTS.jobsCompletionRequested.example.assistantMessageId,
      headers: { 'content-type': 'application/cloudevents+json' },
    });
    expect(JSON.parse(toKafkaRecord(job).value)).toEqual(job);
  });

  it('refuses an event of an unknown type', () => {
    const event = { ...createEvent(completed, completed.example), type: 'vivier.chat.nope.v1' };
    expect(() => toKafkaRecord(event as unknown as AnyEvent)).toThrow(UnknownEventTypeError);
  });
});

describe('eventModelId', () => {
  it('keeps an id that fits, cuts a longer one to 256 UTF-16 units, and never in the middle of a character', () => {
    expect(eventModelId('openai/gpt-4o-mini')).toBe('openai/gpt-4o-mini');
    expect(eventModelId(`p/${'m'.repeat(300)}`)).toHaveLength(MODEL_ID_MAX_LENGTH);
    // 255 units, then an emoji (two units) astride the limit, then more.
    const astride = `${'m'.repeat(255)}🙂tail`;
    const cut = eventModelId(astride);
    expect(cut).toBe('m'.repeat(255));
    expect(JSON.parse(JSON.stringify(cut))).toBe(cut);
    expect(/[\ud800-\udbff]$/.test(cut)).toBe(false);
  });
});
