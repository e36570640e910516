import type { IncomingHttpHeaders } from 'node:http';
import type { Faults, ServerErrorStatus } from './types.js';

type Kind = 'ms' | 'bool' | 'status' | 'count';

/** Each switch, its per-request header, and how its value is read. */
export const SWITCHES: ReadonlyArray<readonly [keyof Faults, string, Kind]> = [
  ['latencyMs', 'x-sim-latency-ms', 'ms'],
  ['tokensPerSecond', 'x-sim-tokens-per-second', 'ms'],
  ['status429', 'x-sim-status-429', 'bool'],
  ['retryAfter', 'x-sim-retry-after', 'ms'],
  ['status5xx', 'x-sim-status-5xx', 'status'],
  ['failTimes', 'x-sim-fail-times', 'count'],
  ['stallAfterChunks', 'x-sim-stall-after-chunks', 'count'],
  ['cutAfterChunks', 'x-sim-cut-after-chunks', 'count'],
  ['errorAfterChunks', 'x-sim-error-after-chunks', 'count'],
  ['maxTokens', 'x-sim-max-tokens', 'count'],
  ['replyTokens', 'x-sim-reply-tokens', 'count'],
];

const STATUSES: readonly number[] = [500, 502, 503, 504, 529];

function readValue(key: string, kind: Kind, raw: unknown): number | boolean {
  if (kind === 'bool') {
    if (typeof raw === 'boolean') return raw;
    if (raw === 'true' || raw === '1') return true;
    if (raw === 'false' || raw === '0') return false;
    throw new Error(`${key} must be true or false`);
  }
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN;
  if (!Number.isFinite(n)) throw new Error(`${key} must be a number`);
  if (kind === 'status') {
    // 0 lets a more specific layer switch a less specific 5xx off.
    if (n !== 0 && !STATUSES.includes(n))
      throw new Error(`${key} must be one of ${STATUSES.join(', ')} (or 0)`);
    return n;
  }
  if (kind === 'count') {
    // -1 lets a more specific layer switch a less specific chunk fault off.
    if (!Number.isInteger(n) || n < -1) throw new Error(`${key} must be an integer >= -1`);
    return n;
  }
  if (n < 0) throw new Error(`${key} must be >= 0`);
  return n;
}

/** Validate an untrusted object (control API body, x-sim-faults header) into Faults. */
export function parseFaults(input: unknown): Faults {
  if (input === null || typeof input !== 'object' || Array.isArray(input))
    throw new Error('faults must be an object');
  const src = input as Record<string, unknown>;
  const out: Record<string, number | boolean> = {};
  const known = new Set<string>(SWITCHES.map(([k]) => k));
  for (const k of Object.keys(src)) {
    if (!known.has(k) && k !== 'model') throw new Error(`unknown fault switch "${k}"`);
  }
  for (const [key, , kind] of SWITCHES) {
    if (src[key] === undefined || src[key] === null) continue;
    out[key] = readValue(key, kind, src[key]);
  }
  return out as Faults;
}

/**
 * Faults from x-sim-* headers, or undefined when the request carries none (the common case,
 * checked with plain property reads so that requests without headers cost nothing).
 */
export function faultsFromHeaders(h: IncomingHttpHeaders): Faults | undefined {
  let out: Record<string, number | boolean> | undefined;
  const all = h['x-sim-faults'];
  if (typeof all === 'string') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(all);
    } catch {
      throw new Error('x-sim-faults must be a JSON object');
    }
    out = { ...(parseFaults(parsed) as Record<string, number | boolean>) };
  }
  for (const [key, header, kind] of SWITCHES) {
    const v = h[header];
    if (typeof v !== 'string') continue;
    out ??= {};
    out[key] = readValue(header, kind, v);
  }
  return out as Faults | undefined;
}

export type FailureKind = '429' | '5xx' | 'stream-error' | 'cut' | 'stall';

export interface ResolvedFaults {
  latencyMs: number;
  tokensPerSecond: number;
  retryAfter: number;
  status5xx: ServerErrorStatus;
  maxTokens?: number;
  replyTokens?: number;
  /** The failure this request gets after failTimes is taken into account, if any. */
  failure?: FailureKind;
  /** For stall / cut / stream-error: after how many token chunks. */
  afterChunks: number;
}

interface Scope {
  faults: Faults;
  /** Requests that reached a failure switch while this scope owned failTimes. */
  seen: number;
}

function failureOf(f: Faults): FailureKind | undefined {
  // When several are set, the one that fails earliest in the exchange wins.
  if (f.status429 === true) return '429';
  if (f.status5xx !== undefined && f.status5xx !== 0) return '5xx';
  if (f.errorAfterChunks !== undefined && f.errorAfterChunks >= 0) return 'stream-error';
  if (f.cutAfterChunks !== undefined && f.cutAfterChunks >= 0) return 'cut';
  if (f.stallAfterChunks !== undefined && f.stallAfterChunks >= 0) return 'stall';
  return undefined;
}

const MAX_HEADER_COUNTERS = 10_000;

/** Global and per-model faults plus the failTimes counters. */
export class FaultStore {
  private global: Scope | undefined;
  private readonly models = new Map<string, Scope>();
  private readonly headerCounters = new Map<string, number>();

  set(faults: Faults, model?: string): void {
    const scope = { faults: { ...faults }, seen: 0 };
    if (model === undefined || model === '') this.global = scope;
    else this.models.set(model, scope);
  }

  clear(model?: string): void {
    if (model === undefined) {
      this.global = undefined;
      this.models.clear();
      this.headerCounters.clear();
    } else {
      this.models.delete(model);
    }
  }

  snapshot(): { global: Faults; models: Record<string, Faults> } {
    const models: Record<string, Faults> = {};
    for (const [k, v] of this.models) models[k] = v.faults;
    return { global: this.global?.faults ?? {}, models };
  }

  /**
   * Merge the layers for one request and decide whether it fails. `headerKey` names the counter
   * for a failTimes given in headers (x-sim-fault-key, or the model plus the header values).
   */
  resolve(model: string | undefined, header: Faults | undefined, headerKey: string): ResolvedFaults {
    const scope = model === undefined ? undefined : this.models.get(model);
    const f: Faults =
      this.global === undefined && scope === undefined && header === undefined
        ? {}
        : { ...this.global?.faults, ...scope?.faults, ...header };
    let failure = failureOf(f);
    if (failure !== undefined && f.failTimes !== undefined) {
      let seen: number;
      if (header?.failTimes !== undefined) {
        if (this.headerCounters.size >= MAX_HEADER_COUNTERS) this.headerCounters.clear();
        seen = (this.headerCounters.get(headerKey) ?? 0) + 1;
        this.headerCounters.set(headerKey, seen);
      } else {
        const owner = scope?.faults.failTimes !== undefined ? scope : this.global;
        seen = owner ? ++owner.seen : 1;
      }
      if (seen > f.failTimes) failure = undefined;
    }
    const afterChunks =
      failure === 'stream-error'
        ? (f.errorAfterChunks ?? 0)
        : failure === 'cut'
          ? (f.cutAfterChunks ?? 0)
          : failure === 'stall'
            ? (f.stallAfterChunks ?? 0)
            : 0;
    return {
      latencyMs: f.latencyMs ?? 0,
      tokensPerSecond: f.tokensPerSecond ?? 0,
      retryAfter: f.retryAfter ?? 1,
      status5xx: (f.status5xx || 500) as ServerErrorStatus,
      maxTokens: f.maxTokens !== undefined && f.maxTokens >= 0 ? f.maxTokens : undefined,
      replyTokens: f.replyTokens !== undefined && f.replyTokens >= 0 ? f.replyTokens : undefined,
      failure,
      afterChunks,
    };
  }
}
