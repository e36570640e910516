// @vivier/contracts: event envelopes, payload schemas, topics and consumer groups.
export * from './topics.js';
export { isDateTime, isUuid, nameBasedUuid, registerFormats } from './formats.js';
export {
  EventContractError,
  EventValidationError,
  UnknownEventTypeError,
  compiledCheck,
  validate,
  type ValidationIssue,
} from './validation.js';
export {
  EVENT_TYPE_PATTERN,
  defineEvent,
  type AnyEventDefinition,
  type EventData,
  type EventDefinition,
  type EventDefinitionInput,
  type SourceOfTopic,
} from './event-definition.js';
export * from './envelope.js';
export * from './registry.js';
export * from './events/common.schema.js';
export * from './events/auth.schema.js';
export * from './events/admin.schema.js';
export * from './events/chat.schema.js';
export * from './events/jobs.schema.js';
export * from './events/worker.schema.js';
export * from './asyncapi.js';
