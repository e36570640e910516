import type { FastifyBaseLogger } from 'fastify';
import type { ChatDatabase } from '../../database';
import { messagesRepository, type MessageRow } from '../messages/messages.repository';
import { eventsFromRow, isTerminal, type ReplyEnvelope, type ReplyEvent } from './reply-events';
import type { ReplyHub } from './reply-hub.service';
import type { ReplyRunner } from './reply-runner.service';
import type { ReplyStreams } from './reply-streams.service';

/** How long a follower waits for news before it asks the database whether the reply ended. */
const CHECK_EVERY_MS = 2000;

/**
 * Serves a reply's events after a given id, with nothing missing and nothing twice:
 * - finished: rebuilt from the stored message (same ids as when it streamed);
 * - running on this instance: from the run's own memory, then live;
 * - running elsewhere (or queued for the worker): the user's Redis channel is subscribed first,
 *   then the Redis journal is read from the id on, then live events follow; an event that skips
 *   an id makes it read the journal again. Whenever nothing arrives for a while (or Redis is
 *   away) the database says whether the reply ended meanwhile, and then it answers.
 */
export class ReplyReplay {
  private readonly messages;

  constructor(
    private readonly deps: { db: ChatDatabase; runner: ReplyRunner; hub: ReplyHub; streams: ReplyStreams; log: FastifyBaseLogger },
  ) {
    this.messages = messagesRepository(deps.db);
  }

  async replay(reply: MessageRow, after: number, write: (event: ReplyEvent) => void, closed: AbortSignal): Promise<void> {
    const local = this.deps.runner.get(reply.id);
    if (local) {
      await new Promise<void>((resolve) => {
        const unsubscribe = local.subscribe((event) => {
          write(event);
          if (isTerminal(event.type)) resolve();
        }, after);
        if (local.finished) resolve();
        closed.addEventListener('abort', () => {
          unsubscribe();
          resolve();
        });
      });
      return;
    }
    if (reply.status !== 'streaming' && reply.status !== 'queued') {
      await this.fromDatabase(reply, after, write);
      return;
    }
    await this.follow(reply, after, write, closed);
  }

  private async fromDatabase(reply: MessageRow, after: number, write: (event: ReplyEvent) => void): Promise<void> {
    const userMessage = after < 1 && reply.replyTo ? await this.messages.findById(reply.replyTo) : undefined;
    for (const event of eventsFromRow(reply, userMessage, after)) write(event);
  }

  private async follow(reply: MessageRow, after: number, write: (event: ReplyEvent) => void, closed: AbortSignal): Promise<void> {
    let last = after;
    let ended = false;
    const inbox: ReplyEnvelope[] = [];
    let wake: (() => void) | undefined;
    const deliver = (event: ReplyEvent) => {
      if (ended || event.seq !== last + 1) return;
      write(event);
      last = event.seq;
      if (isTerminal(event.type)) ended = true;
    };
    let unsubscribe: () => void = () => undefined;
    let redisUp = true;
    try {
      unsubscribe = await this.deps.hub.followUser(reply.userId, (envelope) => {
        if (envelope.messageId !== reply.id) return;
        inbox.push(envelope);
        wake?.();
      });
    } catch (error) {
      redisUp = false;
      this.deps.log.warn({ err: error, messageId: reply.id }, 'cannot follow a reply through Redis: polling the database');
    }
    const onClose = () => wake?.();
    closed.addEventListener('abort', onClose);
    try {
      let readJournal = redisUp;
      while (!ended && !closed.aborted) {
        if (readJournal) {
          readJournal = false;
          try {
            for (const event of await this.deps.streams.read(reply.id, last)) deliver(event);
          } catch {
            redisUp = false;
          }
          if (ended) break;
        }
        if (inbox.length === 0) {
          const woke = await new Promise<boolean>((resolve) => {
            const timer = setTimeout(() => resolve(false), redisUp ? CHECK_EVERY_MS : 500);
            wake = () => {
              clearTimeout(timer);
              resolve(true);
            };
          });
          wake = undefined;
          if (!woke) {
            const current = await this.messages.findById(reply.id);
            if (!current || (current.status !== 'streaming' && current.status !== 'queued')) {
              if (current) await this.fromDatabase(current, last, write);
              ended = true;
              break;
            }
            readJournal = redisUp;
            continue;
          }
        }
        const batch = inbox.splice(0).sort((a, b) => a.seq - b.seq);
        for (const event of batch) {
          if (event.seq <= last) continue;
          if (event.seq > last + 1) {
            // Something was missed (published before we listened, or lost): the journal has it.
            readJournal = true;
            break;
          }
          deliver(event);
        }
      }
    } finally {
      closed.removeEventListener('abort', onClose);
      unsubscribe();
    }
  }
}
