CREATE TABLE "chat"."chats" (
	"id" uuid PRIMARY KEY NOT NULL,
	"user_id" uuid NOT NULL,
	"title" text,
	"model" text NOT NULL,
	"system_prompt" text,
	"archived" boolean DEFAULT false NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "chat"."files" (
	"id" uuid PRIMARY KEY NOT NULL,
	"user_id" uuid NOT NULL,
	"name" text NOT NULL,
	"content_type" text NOT NULL,
	"size_bytes" integer NOT NULL,
	"object_key" text NOT NULL,
	"text_content" text,
	"created_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "chat"."quota_usage" (
	"user_id" uuid NOT NULL,
	"month" date NOT NULL,
	"reserved" bigint DEFAULT 0 NOT NULL,
	"used" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "quota_usage_user_id_month_pk" PRIMARY KEY("user_id","month"),
	CONSTRAINT "quota_usage_reserved_check" CHECK ("chat"."quota_usage"."reserved" >= 0)
);
--> statement-breakpoint
CREATE TABLE "chat"."quotas" (
	"user_id" uuid PRIMARY KEY NOT NULL,
	"monthly_tokens" bigint,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE INDEX "chats_user_archived_id_idx" ON "chat"."chats" USING btree ("user_id","archived","id");--> statement-breakpoint
CREATE INDEX "files_user_id_idx" ON "chat"."files" USING btree ("user_id","id");