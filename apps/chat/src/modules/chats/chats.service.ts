import { sql } from 'drizzle-orm';
import { createEvent, EVENTS } from '@vivier/contracts';
import type { Publish } from '@vivier/messaging';
import type { Identity } from '@vivier/service-kit';
import { problems } from '@vivier/service-kit';
import type { ChatDatabase } from '../../database';
import { decodeCursor, pageOf, type ChatView } from '../../http.schema';
import { newId } from '../../ids';
import type { ModelCatalog } from '../models/models.service';
import { chatsRepository, type ChatRow } from './chats.repository';

export function chatView(row: ChatRow): ChatView {
  return {
    id: row.id,
    title: row.title,
    model: row.model,
    systemPrompt: row.systemPrompt,
    archived: row.archived,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

export interface ChatChanges {
  title?: string;
  model?: string;
  systemPrompt?: string | null;
  archived?: boolean;
}

/** Conversations of one owner: create, page, read, change, delete; each change with its event. */
export class ChatsService {
  readonly repository: ReturnType<typeof chatsRepository>;

  constructor(
    private readonly deps: {
      db: ChatDatabase;
      publish: Publish;
      models: ModelCatalog;
      /** Stops replies that are running (on this instance or, through Redis, another) or queued for the worker. */
      cancelReplies: (replies: Array<{ id: string; queued: boolean }>) => Promise<void>;
    },
  ) {
    this.repository = chatsRepository(deps.db);
  }

  async create(user: Identity, input: { title?: string; model?: string; systemPrompt?: string }): Promise<ChatView> {
    const model = input.model ?? this.deps.models.defaultModel;
    this.deps.models.resolve(model);
    const { id, createdAt } = newId();
    const row = await this.deps.db.transaction(async (tx) => {
      const chat = await this.repository.insert(
        { id, userId: user.sub, title: input.title ?? null, model, systemPrompt: input.systemPrompt ?? null, archived: false, createdAt, updatedAt: createdAt },
        tx,
      );
      await this.deps.publish(
        tx,
        createEvent(EVENTS.chatCreated, { chatId: id, userId: user.sub, title: chat.title, model, createdAt: createdAt.toISOString() }),
      );
      return chat;
    });
    return chatView(row);
  }

  async list(user: Identity, query: { archived?: boolean; limit?: number; cursor?: string }) {
    const limit = query.limit ?? 50;
    const before = decodeCursor(query.cursor);
    const rows = await this.repository.page(user.sub, { archived: query.archived ?? false, ...(before ? { before } : {}), limit });
    return pageOf(rows, limit, chatView);
  }

  /** The caller's chat, or 404 `not_found` (also for another user's chat: no hint that it exists). */
  async require(user: Identity, id: string): Promise<ChatRow> {
    const row = await this.repository.find(user.sub, id);
    if (!row) throw problems.notFound('No such chat.');
    return row;
  }

  async update(user: Identity, id: string, input: ChatChanges): Promise<ChatView> {
    if (input.model !== undefined) this.deps.models.resolve(input.model);
    const now = new Date();
    const row = await this.deps.db.transaction(async (tx) => {
      const current = await this.repository.find(user.sub, id, tx);
      if (!current) throw problems.notFound('No such chat.');
      const changes: Parameters<typeof this.repository.update>[2] = { updatedAt: now };
      const eventChanges: { title?: string; model?: string; archived?: boolean; systemPromptChanged?: true } = {};
      if (input.title !== undefined && input.title !== current.title) eventChanges.title = changes.title = input.title;
      if (input.model !== undefined && input.model !== current.model) eventChanges.model = changes.model = input.model;
      if (input.archived !== undefined && input.archived !== current.archived) eventChanges.archived = changes.archived = input.archived;
      if (input.systemPrompt !== undefined && input.systemPrompt !== current.systemPrompt) {
        changes.systemPrompt = input.systemPrompt;
        eventChanges.systemPromptChanged = true;
      }
      if (Object.keys(eventChanges).length === 0) return current;
      const updated = await this.repository.update(user.sub, id, changes, tx);
      await this.deps.publish(
        tx,
        createEvent(EVENTS.chatUpdated, { chatId: id, userId: user.sub, changes: eventChanges, updatedAt: now.toISOString() }),
      );
      return updated!;
    });
    return chatView(row);
  }

  /**
   * Deletes the chat with its messages. Replies still running or queued go with it: their quota
   * reservations are released in the same transaction (nothing else would: the row that held
   * them is gone), and once it commits they are cancelled, so no provider keeps generating for
   * nobody. The rows are locked first: a reply ending meanwhile settles either before (and holds
   * nothing any more) or after (and finds no row, and counts only what it generated).
   */
  async delete(user: Identity, id: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.deleteOnce(user, id);
      } catch (error) {
        // A send that reserved before this locked the chat, then waits for the chat's key: the
        // database ends one of the two; the delete tries again (the send fails on the gone chat).
        if ((error as { code?: string }).code !== '40P01' || attempt >= 3) throw error;
      }
    }
  }

  private async deleteOnce(user: Identity, id: string): Promise<void> {
    const inFlight = await this.deps.db.transaction(async (tx) => {
      // The chat first, in a statement of its own: a send that has not stored its turn yet now
      // waits (and then finds no chat), and the read below, a new statement, sees every turn
      // committed before this lock.
      const chat = await tx.execute(sql`select 1 from chat.chats where id = ${id} and user_id = ${user.sub} for update`);
      if (chat.rows.length === 0) throw problems.notFound('No such chat.');
      // The month of a reservation is its reply's, in UTC (quotaMonth).
      const replies = await tx.execute<{ id: string; status: string }>(sql`
        with replies as (
          select id, status, quota_reserved, created_at from chat.messages
          where chat_id = ${id} and user_id = ${user.sub} and status in ('streaming', 'queued')
          for update
        ), released as (
          update chat.quota_usage u set reserved = greatest(u.reserved - r.total, 0)
          from (select date_trunc('month', created_at at time zone 'UTC')::date as month, sum(quota_reserved) as total
                from replies group by 1) r
          where u.user_id = ${user.sub} and u.month = r.month and r.total > 0
        )
        select id, status from replies`);
      if (!(await this.repository.delete(user.sub, id, tx))) throw problems.notFound('No such chat.');
      await this.deps.publish(tx, createEvent(EVENTS.chatDeleted, { chatId: id, userId: user.sub, deletedAt: new Date().toISOString() }));
      return replies.rows.map((r) => ({ id: r.id, queued: r.status === 'queued' }));
    });
    if (inFlight.length > 0) await this.deps.cancelReplies(inFlight);
  }
}
