import { createEvent, EVENTS, type EventOf, type WorkerCompletionFinishedData } from '@vivier/contracts';
import { HandlerTimedOut, type EventHandlers, type Executor, type HandlerContext, type Publish } from '@vivier/messaging';
import { countPromptTokens, countTokens, type ChatMessage, type ProviderRouter } from '@vivier/providers';
import type { FastifyBaseLogger } from 'fastify';
import type { WorkerDatabase } from '../worker-db';
import type { CancelWatch } from './cancel-watch';
import { callProvider, emptyResult, ProviderCallFailure, type ProviderCallResult } from './provider-call';
import { completionJobRepository } from './completion.repository';

type CompletionRequested = EventOf<typeof EVENTS.jobsCompletionRequested>;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface CompletionConsumerDeps {
  db: WorkerDatabase;
  router: ProviderRouter;
  publish: Publish;
  logger: FastifyBaseLogger;
  /** COMPLETION_LEASE_MS: renewed while the provider answers; a crashed instance's job is free after it. */
  leaseMs: number;
  /** CONSUMER_RETRY_ATTEMPTS: the attempt after which the messaging library dead-letters. */
  maxAttempts: number;
  /** Cancels asked for by chat: a job cancelled before it starts calls no provider; one under way is aborted. */
  cancels: CancelWatch;
}

/** Another instance holds the job's lease; the retry topic brings it back later. */
export class JobBusyError extends Error {
  constructor(id: string) {
    super(`completion ${id} is being produced by another instance`);
    this.name = 'JobBusyError';
  }
}

function finishedPayload(
  data: CompletionRequested['data'],
  call: ProviderCallResult,
  outcome: { status: 'completed' | 'cancelled' } | { status: 'failed'; error: { code: string; detail: string } },
): WorkerCompletionFinishedData {
  return {
    assistantMessageId: data.assistantMessageId,
    chatId: data.chatId,
    userId: data.userId,
    userMessageId: data.userMessageId,
    status: outcome.status,
    content: call.content,
    provider: call.provider,
    model: call.model,
    usage: call.usage,
    latencyMs: call.latencyMs,
    ...(call.timeToFirstTokenMs === undefined ? {} : { timeToFirstTokenMs: call.timeToFirstTokenMs }),
    ...(outcome.status === 'failed' ? { error: outcome.error } : {}),
  };
}

/**
 * `jobs.completion`: produces an async reply and publishes `completion.finished`, which chat
 * stores. Idempotent per assistant message (worker.jobs): the job is claimed in its own committed
 * transaction before the provider is called and its answer is committed as soon as it arrives,
 * so a redelivery, a retry after a later failure or a second copy of the request never calls the
 * provider again once it has answered, and the result is published exactly once.
 *
 * A provider failure worth retrying is thrown: the messaging library retries with backoff and,
 * after CONSUMER_RETRY_ATTEMPTS, parks the record on `jobs.completion.dlq.worker`. On that last
 * attempt `completion.finished` (failed, with the reason) is committed first, so chat marks the
 * message failed. A failure that no retry can fix (unknown model, rejected key or request) is
 * published as failed at once, except a model whose provider is unknown here, which gets
 * UNKNOWN_PROVIDER_ATTEMPTS attempts first (provider settings from the admin API may be on their way).
 *
 * A reply chat cancelled (CancelWatch) is not produced: a job that comes up after the cancel calls
 * no provider, and a call under way is aborted. Either way `completion.finished` says `cancelled`,
 * with what was generated and its usage, which chat adds to the month's use.
 */
/** Attempts of a job whose model no provider here serves (see ProviderCallFailure.unknownHere). */
export const UNKNOWN_PROVIDER_ATTEMPTS = 3;

export function completionHandlers(deps: CompletionConsumerDeps): EventHandlers {
  const repo = completionJobRepository(deps.db);

  async function publishOnce(tx: Executor, result: WorkerCompletionFinishedData): Promise<void> {
    if (await repo.markPublished(tx, result.assistantMessageId)) {
      await deps.publish(tx, createEvent(EVENTS.workerCompletionFinished, result));
    }
  }

  async function handle(event: CompletionRequested, { tx, attempt, signal }: HandlerContext): Promise<void> {
    const data = event.data;
    const log = deps.logger.child({ assistantMessageId: data.assistantMessageId, eventId: event.id, attempt });
    // Busy: another instance holds the lease (a stale consumer after a rebalance), or one that
    // crashed held it. Its lease is renewed while it works, so wait a little over one lease for
    // it to finish or run out, then take over.
    const deadline = Date.now() + deps.leaseMs * 1.5;
    let claim = await repo.claim(data, deps.leaseMs);
    while (claim.kind === 'busy' && Date.now() < deadline) {
      await sleep(Math.min(500, deps.leaseMs / 4));
      claim = await repo.claim(data, deps.leaseMs);
    }
    if (claim.kind === 'finished') {
      if (!claim.published) await publishOnce(tx, claim.result);
      else log.info('completion already produced and published; nothing to do');
      return;
    }
    if (claim.kind === 'busy') throw new JobBusyError(data.assistantMessageId);

    const messages: ChatMessage[] = [
      ...(data.systemPrompt ? [{ role: 'system' as const, content: data.systemPrompt }] : []),
      ...data.messages,
    ];
    // Cancelled while it waited in the topic: chat has ended it; the provider is not called.
    if (await deps.cancels.requested(data.assistantMessageId)) {
      const skipped = finishedPayload(data, emptyResult(data.model, 'cancelled'), { status: 'cancelled' });
      await repo.storeResult(data.assistantMessageId, skipped);
      await publishOnce(tx, skipped);
      log.info('reply cancelled before its job started: no provider call');
      return;
    }
    let call: ProviderCallResult;
    const watch = deps.cancels.watch(data.assistantMessageId);
    const renewing = setInterval(() => {
      repo.renewLease(data.assistantMessageId, deps.leaseMs).catch((err: unknown) => log.warn({ err }, 'could not renew the job lease'));
    }, Math.max(250, Math.floor(deps.leaseMs / 3)));
    try {
      call = await callProvider(deps.router, data.model, messages, {
        // Chat's cancel, or the consumer's: its deadline, or the worker stopping.
        signal: AbortSignal.any([watch.signal, signal]),
        ...(data.maxOutputTokens === undefined ? {} : { maxTokens: data.maxOutputTokens }),
      });
    } catch (error) {
      if (signal.aborted) {
        // Not the user's cancel. Out of time on the last attempt: the reply fails for good, as on
        // any last failure, so that chat is told. Otherwise the job is let go (its lease given up,
        // so that the next member need not wait it out) and the consumer retries it, or leaves it
        // to the next member when it is stopping.
        if (signal.reason instanceof HandlerTimedOut && attempt >= deps.maxAttempts) {
          const partial = error instanceof ProviderCallFailure ? error.partial : emptyResult(data.model);
          const failed = finishedPayload(data, partial, { status: 'failed', error: { code: 'provider_timeout', detail: signal.reason.message } });
          await deps.db.transaction(async (own) => {
            await repo.storeResult(data.assistantMessageId, failed, own);
            await publishOnce(own, failed);
          });
          log.warn({ err: signal.reason }, 'completion ran out of time on its last attempt; completion.finished (failed) published');
        } else {
          await repo.release(data.assistantMessageId, 'stopped by the consumer (deadline or shutdown)');
        }
        throw signal.reason;
      }
      if (!(error instanceof ProviderCallFailure)) throw error;
      if (error.error.code === 'cancelled') {
        // Aborted on chat's cancel: what was generated is reported, so that chat counts it. A
        // stream cut short carries no usage from the provider: it is counted here the way chat
        // counts a reply cancelled while it streams (its prompt, and the text so far).
        const partial = error.partial;
        if (partial.usage.promptTokens + partial.usage.completionTokens === 0) {
          partial.usage = { promptTokens: await countPromptTokens(messages), completionTokens: partial.content ? await countTokens(partial.content) : 0 };
        }
        const cancelled = finishedPayload(data, partial, { status: 'cancelled' });
        await repo.storeResult(data.assistantMessageId, cancelled);
        await publishOnce(tx, cancelled);
        log.info({ usage: partial.usage }, 'reply cancelled: provider call aborted, completion.finished (cancelled) published');
        return;
      }
      const last = attempt >= deps.maxAttempts;
      // A model no provider here serves gets a few attempts (the retry topic's backoff) for the
      // provider settings to arrive, then fails like any unknown model.
      const waitForSettings = error.unknownHere && attempt < Math.min(UNKNOWN_PROVIDER_ATTEMPTS, deps.maxAttempts);
      if ((error.retryable && !last) || waitForSettings) {
        log.warn({ err: error }, 'provider failed; the job will be retried');
        await repo.release(data.assistantMessageId, error.message);
        throw error;
      }
      // Final: the message is marked failed by chat. Committed on its own, since the handler's
      // transaction is rolled back when the error is rethrown for the dead-letter topic.
      const failed = finishedPayload(data, error.partial, { status: 'failed', error: error.error });
      await deps.db.transaction(async (own) => {
        await repo.storeResult(data.assistantMessageId, failed, own);
        await publishOnce(own, failed);
      });
      log.warn({ err: error, retryable: error.retryable }, 'completion failed for good; completion.finished (failed) published');
      if (error.retryable) throw error; // kept retrying to the end: park it on the dead-letter topic
      return;
    } finally {
      clearInterval(renewing);
      watch.done();
    }
    const result = finishedPayload(data, call, { status: 'completed' });
    await repo.storeResult(data.assistantMessageId, result);
    await publishOnce(tx, result);
  }

  return { 'vivier.jobs.completion.requested.v1': handle };
}
