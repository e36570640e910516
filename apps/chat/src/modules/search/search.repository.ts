import { sql } from 'drizzle-orm';
import type { Executor } from '@vivier/messaging';
import { chatTables } from '@vivier/db-chat';

/** node-postgres' result of `execute` (drizzle types it per driver). */
interface QueryResult<T> {
  rows: T[];
  rowCount: number | null;
}

const { messages, chats } = chatTables;

export interface SearchHit {
  messageId: string;
  chatId: string;
  chatTitle: string | null;
  role: 'user' | 'assistant';
  snippet: string;
  rank: number;
  createdAt: Date;
}

/**
 * Full-text search over one user's messages: `websearch_to_tsquery` (quotes, `or`, `-word`) on the
 * generated `search` tsvector (GIN-indexed in every partition), ranked by `ts_rank`. Snippets mark
 * matches with `**`. The headline is computed only for the rows of the page.
 */
export function searchRepository(db: Executor) {
  return {
    async search(userId: string, query: string, limit: number, offset: number): Promise<SearchHit[]> {
      const result = (await db.execute(sql`
        with q as (select websearch_to_tsquery('english', ${query}) as query),
        hits as (
          select m.id, m.chat_id, m.role, m.content, m.created_at, ts_rank(m.search, q.query) as rank
          from ${messages} m, q
          where m.user_id = ${userId}::uuid and m.search @@ q.query
          order by rank desc, m.created_at desc, m.id desc
          limit ${limit} offset ${offset}
        )
        select h.id as message_id, h.chat_id, c.title as chat_title, h.role, h.rank, h.created_at,
               ts_headline('english', h.content, q.query, 'StartSel=**, StopSel=**, MaxWords=30, MinWords=10, MaxFragments=2') as snippet
        from hits h join ${chats} c on c.id = h.chat_id, q
        order by h.rank desc, h.created_at desc, h.id desc`)) as QueryResult<{
        message_id: string;
        chat_id: string;
        chat_title: string | null;
        role: 'user' | 'assistant';
        snippet: string;
        rank: number;
        created_at: string | Date;
      }>;
      return result.rows.map((r) => ({
        messageId: r.message_id,
        chatId: r.chat_id,
        chatTitle: r.chat_title,
        role: r.role,
        snippet: r.snippet,
        rank: Number(r.rank),
        createdAt: new Date(r.created_at),
      }));
    },
  };
}
