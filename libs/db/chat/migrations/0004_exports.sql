CREATE TABLE "chat"."exports" (
	"id" uuid PRIMARY KEY NOT NULL,
	"user_id" uuid NOT NULL,
	"status" text NOT NULL,
	"object_key" text,
	"size_bytes" bigint,
	"expires_at" timestamp with time zone,
	"failure_reason" text,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL,
	CONSTRAINT "exports_status_check" CHECK ("chat"."exports"."status" in ('pending', 'ready', 'failed'))
);
--> statement-breakpoint
CREATE INDEX "exports_user_id_idx" ON "chat"."exports" USING btree ("user_id","id");