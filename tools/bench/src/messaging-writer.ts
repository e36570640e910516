/**
 * The steady-rate event writers of the messaging benchmark, in their own thread: in production
 * they are another service, and sharing one event loop with the relay and the consumer being
 * measured would add the writers' own scheduling delays to every latency.
 *
 * workerData: { url, schema, rate, seconds, chats }. Posts batches of [eventId, committedAtMs]
 * while it runs, after { started: epochMs } when the clock starts, and finally { done: true, sent, seconds }.
 */
import { parentPort, workerData } from 'node:worker_threads';
import pg from 'pg';
import { pgSchema } from 'drizzle-orm/pg-core';
import { drizzle } from 'drizzle-orm/node-postgres';
import { chatMessageEvent } from './messaging-events';
import { createPublisher, messagingTables } from '@vivier/messaging';

interface WriterOptions {
  url: string;
  schema: string;
  rate: number;
  seconds: number;
  chats: string[];
}

const WRITERS = 16;
const { url, schema, rate, seconds, chats } = workerData as WriterOptions;
const pool = new pg.Pool({ connectionString: url, max: WRITERS });
const db = drizzle(pool);
const publish = createPublisher(messagingTables(pgSchema(schema)).outbox);
let committed: Array<[string, number]> = [];
const flush = setInterval(() => {
  if (committed.length > 0) parentPort!.postMessage(committed);
  committed = [];
}, 100);

// Every connection open and every code path warm before the clock starts: otherwise the first
// transactions wait for connections, and the schedule then catches up in a burst.
await Promise.all(Array.from({ length: WRITERS }, () => pool.query('select 1')));
await db.transaction(async (tx) => {
  await publish(tx, chatMessageEvent(chats[0]!, 'warm-up'));
  tx.rollback();
}).catch(() => undefined);

const total = rate * seconds;
const start = performance.now();
parentPort!.postMessage({ started: Date.now() });
let sent = 0;
await Promise.all(
  Array.from({ length: WRITERS }, async (_, w) => {
    for (let i = w; i < total; i += WRITERS) {
      const wait = start + (i / rate) * 1000 - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const event = chatMessageEvent(chats[i % chats.length]!, i);
      await db.transaction((tx) => publish(tx, event));
      committed.push([event.id, Date.now()]);
      sent += 1;
    }
  }),
);
clearInterval(flush);
parentPort!.postMessage(committed);
parentPort!.postMessage({ done: true, sent, seconds: (performance.now() - start) / 1000 });
await pool.end();
