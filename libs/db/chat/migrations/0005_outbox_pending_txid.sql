-- vivier:no-transaction
-- Built without blocking the outbox's writes (every turn, sign-in or usage record inserts there).
-- A failed concurrent build leaves an invalid index: dropped first when this runs again.
DROP INDEX CONCURRENTLY IF EXISTS "chat"."outbox_pending_txid_idx";--> statement-breakpoint
CREATE INDEX CONCURRENTLY "outbox_pending_txid_idx" ON "chat"."outbox" USING btree ("txid") WHERE "chat"."outbox"."published_at" is null;
