import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import { ValueErrorType, type ValueError } from '@sinclair/typebox/errors';
import './formats.js';

/** One reason a value does not match its schema. `path` is a JSON Pointer into the event. */
export interface ValidationIssue {
  readonly path: string;
  readonly message: string;
}

/** Base class of the errors the contracts throw, so a consumer can catch them all at once. */
export class EventContractError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** An event (or the data given to createEvent) does not match its contract. Dead-letter it. */
export class EventValidationError extends EventContractError {
  /** The event type, when the envelope had a string one. */
  readonly type: string | undefined;
  readonly issues: readonly ValidationIssue[];

  constructor(type: string | undefined, issues: readonly ValidationIssue[]) {
    const list = issues.map((issue) => `${issue.path || '(root)'}: ${issue.message}`).join('; ');
    super(`Invalid ${type ?? 'event'}: ${list}`);
    this.type = type;
    this.issues = issues;
  }
}

/**
 * A well-formed envelope whose type this version of the contracts does not know (a newer version,
 * or a retired one). A consumer chooses: skip it, or dead-letter it.
 */
export class UnknownEventTypeError extends EventContractError {
  readonly type: string;

  constructor(type: string) {
    super(`Unknown event type ${type}`);
    this.type = type;
  }
}

const MAX_ISSUES = 20;

// Compiling is slow and checking is fast: compile each schema once, on first use.
const compiled = new WeakMap<TSchema, TypeCheck<TSchema>>();

export function compiledCheck<T extends TSchema>(schema: T): TypeCheck<T> {
  let check = compiled.get(schema) as TypeCheck<T> | undefined;
  if (!check) {
    check = TypeCompiler.Compile(schema);
    compiled.set(schema, check);
  }
  return check;
}

/** The issues of a value against a schema (empty when it is valid), paths prefixed with `prefix`. */
export function validate(schema: TSchema, value: unknown, prefix = ''): ValidationIssue[] {
  const check = compiledCheck(schema);
  if (check.Check(value)) return [];
  const issues: ValidationIssue[] = [];
  const seen = new Set<string>();
  for (const error of check.Errors(value)) {
    for (const issue of describe(error)) {
      const path = prefix + issue.path;
      // A missing property also fails its type check: report the first reason per path only.
      if (seen.has(path)) continue;
      seen.add(path);
      issues.push({ path, message: issue.message });
      if (issues.length >= MAX_ISSUES) return issues;
    }
  }
  return issues;
}

const TYPE_MISMATCH = new Set<ValueErrorType>([
  ValueErrorType.String,
  ValueErrorType.Number,
  ValueErrorType.Integer,
  ValueErrorType.Boolean,
  ValueErrorType.Null,
  ValueErrorType.Object,
  ValueErrorType.Array,
  ValueErrorType.Literal,
]);

// TypeBox reports a failed union as "Expected union value". Say what was expected instead, or,
// when exactly one branch has the right type (a nullable string that is too long), its own reason.
function describe(error: ValueError): ValidationIssue[] {
  if (error.type !== ValueErrorType.Union) {
    if (error.type === ValueErrorType.Literal) {
      return [{ path: error.path, message: `Expected ${JSON.stringify(error.schema.const)}` }];
    }
    return [{ path: error.path, message: error.message }];
  }
  const branches = error.errors.map((iterator) => [...iterator]);
  const plausible = branches.filter(
    (errors) => !errors.some((e) => e.path === error.path && TYPE_MISMATCH.has(e.type)),
  );
  if (plausible.length === 1 && plausible[0]) return plausible[0].flatMap(describe);
  const variants = (error.schema.anyOf as TSchema[]).map((variant) =>
    'const' in variant ? JSON.stringify(variant.const) : String(variant.type ?? 'a matching value'),
  );
  return [{ path: error.path, message: `Expected one of ${variants.join(', ')}` }];
}
