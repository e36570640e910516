import type { FastifyBaseLogger } from 'fastify';
import { createEvent, cutText, eventModelId, EVENTS, nameBasedUuid } from '@vivier/contracts';
import {
  countPromptTokens,
  countTokens,
  isProviderError,
  type ChatMessage,
  type ContentPart,
  type ProviderRouter,
  type RoutedStreamEvent,
} from '@vivier/providers';
import { HttpProblem, type Identity } from '@vivier/service-kit';
import { newId } from '../../ids';
import type { ChatMetrics } from '../../metrics';
import type { ModelCatalog } from '../models/models.service';
import type { Settlement, TurnsRepository } from '../messages/turns.repository';
import { quotaMonth } from '../quotas/quotas.repository';
import { SETTLE_ATTEMPTS, UsageLedger } from '../quotas/usage-ledger';

/** The request body of `POST /v1/chat/completions`, as far as Vivier uses it. */
export interface CompletionBody {
  model: string;
  messages: Array<{
    role: string;
    content: string | Array<{ type: string; text?: string; image_url?: { url: string } | string }> | null;
  }>;
  stream?: boolean;
  stream_options?: { include_usage?: boolean } | null;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  stop?: string | string[] | null;
  tools?: unknown[] | null;
  functions?: unknown[] | null;
  tool_choice?: unknown;
  function_call?: unknown;
  response_format?: { type?: string } | null;
}

/**
 * Parameters that change what an answer must be, which Vivier's providers do not carry: ignored,
 * a client would take a plain text answer for one that honoured them (an agent waiting for a tool
 * call, a parser for JSON), so they are refused, as OpenAI refuses a parameter a model lacks.
 * Sampling hints (seed, penalties, logit_bias, user, …) are still accepted and ignored.
 */
function refuseUnsupported(body: CompletionBody): void {
  const refuse = (param: string, what: string) => {
    throw new HttpProblem(400, 'unsupported_parameter', `${what} is not supported by this deployment: send the request without \`${param}\`.`, {
      extensions: { errors: [{ path: `/${param}`, message: 'not supported' }] },
    });
  };
  if (Array.isArray(body.tools) && body.tools.length > 0) refuse('tools', 'Tool calling');
  if (Array.isArray(body.functions) && body.functions.length > 0) refuse('functions', 'Function calling');
  if (body.tool_choice != null && body.tool_choice !== 'none' && body.tool_choice !== 'auto') refuse('tool_choice', 'Tool calling');
  if (body.function_call != null && body.function_call !== 'none' && body.function_call !== 'auto') refuse('function_call', 'Function calling');
  const format = body.response_format?.type;
  if (format !== undefined && format !== 'text') refuse('response_format', `\`response_format\` "${format}" (structured output)`);
}

export interface CompletionChunkSink {
  /** Writes one chunk (already JSON); false when the client has gone. */
  chunk(json: string): boolean;
  /** Aborted when the client goes away. */
  signal: AbortSignal;
}

interface Outcome {
  text: string;
  provider: string;
  model: string;
  promptTokens: number;
  completionTokens: number;
  finishReason: string;
  status: 'completed' | 'cancelled' | 'failed';
  error?: { code: string; detail: string };
  startedAt: number;
  firstTokenAt?: number;
}

const FINISH: Record<string, string> = {
  stop: 'stop',
  length: 'length',
  content_filter: 'content_filter',
  error: 'stop',
  cancelled: 'stop',
};

/**
 * A stable per-user id under which completions of the OpenAI-compatible API are reported
 * (`chat.message.completed.chatId`): they belong to no conversation, but usage is counted per
 * chat event key, and one user's API usage stays on one partition, in order. A name-based UUID
 * (RFC 9562 v5 layout) of the user id.
 */
export function apiChatId(userId: string): string {
  let id = apiChatIds.get(userId);
  if (id === undefined) {
    id = nameBasedUuid('sha1', `vivier:openai-api:${userId}`);
    // A hash per request was 2 % of chat's CPU at 50 connections; the callers are few and repeat.
    if (apiChatIds.size >= API_CHAT_IDS_KEPT) apiChatIds.delete(apiChatIds.keys().next().value!);
    apiChatIds.set(userId, id);
  }
  return id;
}
const API_CHAT_IDS_KEPT = 10_000;
const apiChatIds = new Map<string, string>();

/** OpenAI's message content → the providers library's (text and data-URL images). */
function toMessages(body: CompletionBody): ChatMessage[] {
  return body.messages.map((m, i) => {
    const role = m.role === 'developer' ? 'system' : m.role;
    if (role !== 'system' && role !== 'user' && role !== 'assistant') {
      throw new HttpProblem(
        400,
        'validation_failed',
        `messages[${i}].role "${m.role}" is not supported here (system, developer, user, assistant).`,
      );
    }
    if (m.content === null || typeof m.content === 'string') return { role, content: m.content ?? '' };
    const parts: ContentPart[] = m.content.map((part, j) => {
      if (part.type === 'text') return { type: 'text', text: part.text ?? '' };
      if (part.type === 'image_url') {
        const url = typeof part.image_url === 'string' ? part.image_url : part.image_url?.url;
        const match = /^data:(image\/[a-z0-9.+-]+);base64,(.+)$/i.exec(url ?? '');
        if (!match)
          throw new HttpProblem(
            400,
            'validation_failed',
            `messages[${i}].content[${j}]: only data: URLs of images are accepted.`,
          );
        return { type: 'image', mediaType: match[1]!.toLowerCase(), data: match[2]! };
      }
      throw new HttpProblem(
        400,
        'validation_failed',
        `messages[${i}].content[${j}].type "${part.type}" is not supported (text, image_url).`,
      );
    });
    return { role, content: parts };
  });
}

/** The reservation a provider call went ahead of was refused or failed: `reason` is for the client, nothing is settled. */
class NotReserved extends Error {
  constructor(readonly reason: unknown) {
    super('the reservation was not granted');
  }
}

/**
 * `POST /v1/chat/completions` through the same router, quotas and usage accounting as chats:
 * reserve prompt + maximum output against the monthly quota (one statement), stream from the
 * provider straight to the client, then settle the reservation with the real usage and write
 * `chat.message.completed` in one statement, after the answer has gone (as gateways log usage:
 * the client does not wait for the bookkeeping; closing the service waits for it). Both writes
 * are group-committed (UsageLedger): one API key at high concurrency would otherwise queue every
 * request on its quota row. When the ledger knows the user has ample room, the provider call
 * starts alongside the reservation (see afterGrant) and the database round trip leaves the
 * latency. Nothing is stored of the conversation itself.
 */
export class OpenAiService {
  private readonly ledger: UsageLedger;
  /** Settlements under way (run() answers before they are written). */
  private readonly settling = new Set<Promise<void>>();

  constructor(
    private readonly deps: {
      turns: TurnsRepository;
      router: ProviderRouter;
      models: ModelCatalog;
      metrics: ChatMetrics;
      maxOutputTokens: number;
      /** See UsageLedger's `settleLingerMs`. */
      settleLingerMs: number;
      /** See UsageLedger's `leaseRequests`. */
      leaseRequests: number;
      /** This instance's quota holder id now: its reservations are held under it (QuotaHolders; it changes if the instance is judged dead). */
      holder: () => string;
      log: FastifyBaseLogger;
    },
  ) {
    this.ledger = new UsageLedger(deps.turns, deps.holder, {
      settleLingerMs: deps.settleLingerMs,
      leaseRequests: deps.leaseRequests,
      onReleaseError: (err, lease) =>
        deps.log.error({ err, ...lease }, 'could not give back a quota lease: its tokens stay reserved until this instance stops or expires (QuotaHolders)'),
    });
  }

  models() {
    return {
      object: 'list' as const,
      data: this.deps.models
        .list()
        .map((m) => ({ id: m.id, object: 'model' as const, created: 0, owned_by: m.provider })),
    };
  }

  /** Resolves, counts and reserves: everything that can refuse the request before any byte is sent. */
  async prepare(user: Identity, body: CompletionBody) {
    refuseUnsupported(body);
    const resolved = this.deps.router.resolve(body.model);
    if (!resolved)
      throw new HttpProblem(
        404,
        'unknown_model',
        `The model \`${body.model}\` does not exist or is not served here (GET /v1/models).`,
      );
    const messages = toMessages(body);
    const promptTokens = await countPromptTokens(messages);
    const room = resolved.contextWindow - promptTokens;
    if (room <= 0)
      throw new HttpProblem(
        400,
        'context_length_exceeded',
        `This model's context window is ${resolved.contextWindow} tokens; the messages take ${promptTokens}.`,
      );
    const asked = body.max_completion_tokens ?? body.max_tokens ?? undefined;
    const maxTokens = Math.min(asked ?? this.deps.maxOutputTokens, room);
    const reserved = promptTokens + maxTokens;
    const now = new Date();
    const month = quotaMonth(now);
    // Served from this instance's lease of the user's quota: granted, no statement at all.
    // Otherwise, when the user's last reservation left ample room, the provider call need not wait
    // for this one's statement: run() starts it at once and holds everything back until the grant.
    let pending: Promise<string | undefined> | undefined;
    let holder = this.ledger.take(user.sub, month, reserved);
    if (holder !== undefined) {
      // granted
    } else if (this.ledger.covers(user.sub, month, reserved)) {
      pending = this.ledger.reserve(user.sub, month, reserved);
      pending.catch(() => undefined); // run() awaits it; an early rejection is not unhandled
    } else if ((holder = await this.ledger.reserve(user.sub, month, reserved)) === undefined) {
      throw this.refused(reserved);
    }
    return {
      messages,
      promptTokens,
      maxTokens,
      reserved,
      month,
      /** The quota holder the reservation was granted under (QuotaHolders), once known. */
      holder,
      /** The reservation still being written, when the provider call goes ahead of it: the holder it was granted under, undefined if refused. */
      pending,
      id: newId(now.getTime()).id,
      created: Math.floor(now.getTime() / 1000),
    };
  }

  private refused(reserved: number): HttpProblem {
    this.deps.metrics.quotaRejections.inc();
    return new HttpProblem(
      429,
      'quota_exceeded',
      `This request may take up to ${reserved} tokens, more than what is left of your monthly token quota.`,
    );
  }

  /**
   * The provider's events, its call started before the pending reservation is answered: nothing
   * is read from it (so nothing reaches the client) until the grant; a refusal (429) or a failed
   * reservation aborts the call, within a round trip of the database, and nothing is settled.
   */
  private async *afterGrant(
    events: AsyncIterable<RoutedStreamEvent>,
    pending: Promise<string | undefined>,
    reserved: number,
    abort: AbortController,
  ): AsyncGenerator<RoutedStreamEvent> {
    const iterator = events[Symbol.asyncIterator]();
    const first = iterator.next();
    first.catch(() => undefined);
    let refusal: unknown;
    try {
      if ((await pending) === undefined) refusal = this.refused(reserved);
    } catch (error) {
      refusal = error;
    }
    if (refusal !== undefined) {
      abort.abort();
      await first.catch(() => undefined);
      await iterator.return?.(undefined);
      throw new NotReserved(refusal);
    }
    try {
      for (let next = await first; !next.done; next = await iterator.next()) yield next.value;
    } finally {
      await iterator.return?.(undefined);
    }
  }

  /**
   * Runs the prepared request, handing each text delta to `onDelta`, and settles it however it
   * ends (a client that left: `cancelled`, usage = what was generated). Provider failures before
   * the first token are thrown (as problems) after the settlement.
   */
  async run(
    user: Identity,
    body: CompletionBody,
    prepared: Awaited<ReturnType<OpenAiService['prepare']>>,
    signal: AbortSignal,
    onDelta: (text: string, model: string) => void,
  ): Promise<Outcome> {
    const outcome: Outcome = {
      text: '',
      provider: 'unknown',
      model: body.model,
      promptTokens: prepared.promptTokens,
      completionTokens: 0,
      finishReason: 'stop',
      status: 'completed',
      startedAt: performance.now(),
    };
    let reported: { promptTokens: number; completionTokens: number } | undefined;
    let failure: unknown;
    const refusal = prepared.pending ? new AbortController() : undefined;
    try {
      const routed = this.deps.router.stream(body.model, {
        messages: prepared.messages,
        maxTokens: prepared.maxTokens,
        promptTokens: prepared.promptTokens,
        ...(body.temperature != null ? { temperature: body.temperature } : {}),
        ...(body.top_p != null ? { topP: body.top_p } : {}),
        ...(body.stop != null ? { stop: Array.isArray(body.stop) ? body.stop : [body.stop] } : {}),
        signal: refusal ? AbortSignal.any([signal, refusal.signal]) : signal,
      });
      const stream = prepared.pending && refusal ? this.afterGrant(routed, prepared.pending, prepared.reserved, refusal) : routed;
      for await (const event of stream) {
        if (event.type === 'route') {
          outcome.provider = event.provider;
          outcome.model = `${event.provider}/${event.model}`;
        } else if (event.type === 'delta') {
          if (outcome.firstTokenAt === undefined) {
            outcome.firstTokenAt = performance.now();
            this.deps.metrics.timeToFirstToken.observe((outcome.firstTokenAt - outcome.startedAt) / 1000);
          }
          outcome.text += event.text;
          onDelta(event.text, outcome.model);
        } else if (event.type === 'usage') {
          reported = { promptTokens: event.promptTokens, completionTokens: event.completionTokens };
        } else if (event.type === 'finish') {
          outcome.finishReason = FINISH[event.reason] ?? 'stop';
        }
      }
      if (signal.aborted) outcome.status = 'cancelled';
    } catch (error) {
      if (error instanceof NotReserved) throw error.reason;
      if (signal.aborted) outcome.status = 'cancelled';
      else {
        outcome.status = 'failed';
        failure = error;
        outcome.error = {
          code: isProviderError(error)
            ? error.beforeFirstToken
              ? 'provider_unavailable'
              : 'stream_interrupted'
            : 'internal_error',
          detail: cutText(isProviderError(error) ? error.publicMessage : String((error as Error | undefined)?.message ?? error), 2000),
        };
        this.deps.log.warn({ err: error, userId: user.sub, messageId: prepared.id }, 'an OpenAI API request failed');
        if (isProviderError(error))
          outcome.provider = error.provider === 'router' ? outcome.provider : error.provider;
      }
    }
    const spent = outcome.text.length > 0 || outcome.status === 'completed';
    outcome.promptTokens = reported?.promptTokens ?? (spent ? prepared.promptTokens : 0);
    outcome.completionTokens = reported?.completionTokens ?? (await countTokens(outcome.text));
    // The answer does not wait for its settlement (see settle): the reservation already holds its
    // tokens against the quota, and the write joins the next group commit. Even building it (the
    // usage event, validated) waits until the answer is written: at one connection that took
    // 17-18 µs off the path from the provider's last byte to the reply (timing marks in chat).
    const settling = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.settle(user, prepared, outcome))
      .catch((error: unknown) => this.deps.log.error({ err: error, userId: user.sub, messageId: prepared.id }, 'an OpenAI API request could not be settled'))
      .finally(() => this.settling.delete(settling));
    this.settling.add(settling);
    if (failure && outcome.text.length === 0) throw providerProblem(failure);
    return outcome;
  }

  /** Resolves once every settlement started so far is written (or given up), and the leases given back; closing waits for it. */
  async drain(): Promise<void> {
    this.ledger.closing();
    while (this.settling.size > 0) await Promise.all(this.settling);
    await this.ledger.releaseLeases();
  }

  /** See UsageLedger.returnLeases (this instance's holds were given back for it). */
  returnLeases(): void {
    void this.ledger.returnLeases();
  }

  /**
   * Settles the reservation with what was used and writes `chat.message.completed`, in one
   * statement shared with the requests settling meanwhile. Runs after the answer has gone: a
   * failure is retried (SETTLE_ATTEMPTS, growing pauses) and, if the database stays away, logged
   * with what was used. Until it is written the quota counts the whole reservation, so a late
   * settlement can refuse a request early but never let one overdraw; the reservation is given
   * back when this instance stops or expires (QuotaHolders), the use is not counted.
   */
  private async settle(
    user: Identity,
    prepared: Awaited<ReturnType<OpenAiService['prepare']>>,
    outcome: Outcome,
  ): Promise<void> {
    const used = outcome.promptTokens + outcome.completionTokens;
    const latencyMs = Math.round(performance.now() - outcome.startedAt);
    // Reserved under this holder: granted at once, or by the reservation run() waited for.
    const holder = prepared.holder ?? (await prepared.pending);
    const settlement: Settlement = { userId: user.sub, month: prepared.month, holder, reserved: prepared.reserved, used, events: [] };
    try {
      settlement.events.push(
        createEvent(EVENTS.chatMessageCompleted, {
          chatId: apiChatId(user.sub),
          userId: user.sub,
          messageId: prepared.id,
          userMessageId: newId().id,
          status: outcome.status,
          provider: outcome.provider,
          model: eventModelId(outcome.model.includes('/') ? outcome.model : `${outcome.provider}/${outcome.model}`),
          usage: { promptTokens: outcome.promptTokens, completionTokens: outcome.completionTokens },
          latencyMs,
          ...(outcome.firstTokenAt === undefined
            ? {}
            : { timeToFirstTokenMs: Math.round(outcome.firstTokenAt - outcome.startedAt) }),
          cached: false,
          ...(outcome.error ? { error: outcome.error } : {}),
          completedAt: new Date().toISOString(),
        }),
      );
    } catch (error) {
      // The quota is still settled with what was used: a usage event that cannot be built must
      // not leave the reservation held.
      this.deps.log.error({ err: error, userId: user.sub, messageId: prepared.id, used }, 'the usage event of an OpenAI API request is invalid: its quota is settled without it');
    }
    try {
      await this.ledger.settleRetrying(settlement);
    } catch (error) {
      this.deps.log.error(
        { err: error, userId: user.sub, month: prepared.month, reserved: prepared.reserved, used, messageId: prepared.id, attempts: SETTLE_ATTEMPTS },
        'could not settle an OpenAI API request: its usage event is missing and its use is not counted; its reservation is given back when this instance stops or expires',
      );
    }
  }
}

/** A provider failure before any text, as the status OpenAI clients expect. */
function providerProblem(error: unknown): HttpProblem {
  if (!isProviderError(error))
    return new HttpProblem(500, 'internal_error', 'The completion failed unexpectedly.');
  // The public message: the vendor's own text (which can quote the platform's key) is logged, not sent.
  if (error.kind === 'not_found') return new HttpProblem(404, 'unknown_model', error.publicMessage);
  if (error.kind === 'bad_request') return new HttpProblem(400, 'provider_rejected', error.publicMessage);
  if (error.kind === 'rate_limited') {
    return new HttpProblem(429, 'provider_rate_limited', error.publicMessage, {
      headers: { 'retry-after': String(Math.max(1, Math.ceil((error.retryAfterMs ?? 1000) / 1000))) },
    });
  }
  if (error.kind === 'timeout') return new HttpProblem(504, 'provider_timeout', error.publicMessage);
  return new HttpProblem(502, 'provider_unavailable', error.publicMessage);
}
