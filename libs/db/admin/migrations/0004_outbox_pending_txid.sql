-- vivier:no-transaction
-- Built without blocking the outbox's writes (every turn, sign-in or usage record inserts there).
-- A failed concurrent build leaves an invalid index: dropped first when this runs again.
DROP INDEX CONCURRENTLY IF EXISTS "admin"."outbox_pending_txid_idx";--> statement-breakpoint
CREATE INDEX CONCURRENTLY "outbox_pending_txid_idx" ON "admin"."outbox" USING btree ("txid") WHERE "admin"."outbox"."published_at" is null;
