-- Messages, partitioned by calendar month (UTC) on created_at. Hand-written: drizzle-kit cannot
-- express PARTITION BY; libs/db/chat/src/messages.ts types the same columns for queries.
CREATE TABLE "chat"."messages" (
	"id" uuid NOT NULL,
	"chat_id" uuid NOT NULL,
	"user_id" uuid NOT NULL,
	"role" text NOT NULL,
	"content" text DEFAULT '' NOT NULL,
	"status" text NOT NULL,
	"reply_to" uuid,
	"model" text,
	"provider" text,
	"prompt_tokens" integer,
	"completion_tokens" integer,
	"context_tokens" integer DEFAULT 0 NOT NULL,
	"latency_ms" integer,
	"time_to_first_token_ms" integer,
	"cached" boolean DEFAULT false NOT NULL,
	"error_code" text,
	"error_detail" text,
	"attachments" uuid[] DEFAULT '{}'::uuid[] NOT NULL,
	"delta_ends" integer[],
	"quota_reserved" integer DEFAULT 0 NOT NULL,
	"params" jsonb,
	"created_at" timestamp with time zone NOT NULL,
	"completed_at" timestamp with time zone,
	"search" tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, "content")) STORED,
	CONSTRAINT "messages_pkey" PRIMARY KEY ("id", "created_at"),
	CONSTRAINT "messages_chat_id_fk" FOREIGN KEY ("chat_id") REFERENCES "chat"."chats"("id") ON DELETE CASCADE,
	CONSTRAINT "messages_role_check" CHECK ("role" IN ('user', 'assistant')),
	CONSTRAINT "messages_status_check" CHECK ("status" IN ('completed', 'streaming', 'queued', 'cancelled', 'failed'))
) PARTITION BY RANGE ("created_at");
--> statement-breakpoint
-- A chat's messages in order (pages oldest first, the newest history for a context).
CREATE INDEX "messages_chat_created_idx" ON "chat"."messages" USING btree ("chat_id", "created_at", "id");
--> statement-breakpoint
-- Full-text search over a user's messages.
CREATE INDEX "messages_search_idx" ON "chat"."messages" USING gin ("search");
--> statement-breakpoint
-- Replies in flight, for the sweeper that fails those whose instance died.
CREATE INDEX "messages_in_flight_idx" ON "chat"."messages" USING btree ("created_at") WHERE "status" IN ('streaming', 'queued');
--> statement-breakpoint
-- Creates the partitions of the current month and the next `months_ahead` months (UTC) that do not
-- exist yet; returns how many it created. Called by the chat service at start and periodically
-- (and by the worker's maintenance), so inserts never meet a missing month. Safe to call
-- concurrently from several instances.
CREATE FUNCTION "chat"."ensure_message_partitions"(months_ahead integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  first_month timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
  month_start timestamp;
  partition_name text;
  created integer := 0;
BEGIN
  IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 120 THEN
    RAISE EXCEPTION 'months_ahead must be between 0 and 120, got %', months_ahead;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('chat.ensure_message_partitions'));
  FOR i IN 0..months_ahead LOOP
    month_start := first_month + make_interval(months => i);
    partition_name := 'messages_' || to_char(month_start, 'YYYY_MM');
    IF to_regclass(format('chat.%I', partition_name)) IS NULL THEN
      EXECUTE format(
        'CREATE TABLE chat.%I PARTITION OF chat.messages FOR VALUES FROM (%L) TO (%L)',
        partition_name,
        month_start AT TIME ZONE 'UTC',
        (month_start + interval '1 month') AT TIME ZONE 'UTC'
      );
      created := created + 1;
    END IF;
  END LOOP;
  RETURN created;
END
$$;
--> statement-breakpoint
SELECT "chat"."ensure_message_partitions"(1);
