CREATE TABLE "admin"."audit_events" (
	"id" uuid PRIMARY KEY NOT NULL,
	"type" text NOT NULL,
	"occurred_at" timestamp with time zone NOT NULL,
	"actor_user_id" uuid,
	"user_id" uuid,
	"ip" text,
	"user_agent" text,
	"details" jsonb NOT NULL,
	"recorded_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "admin"."providers" (
	"id" text PRIMARY KEY NOT NULL,
	"kind" text NOT NULL,
	"enabled" boolean NOT NULL,
	"base_url" text,
	"models" jsonb NOT NULL,
	"routing" jsonb NOT NULL,
	"api_key_ciphertext" "bytea",
	"api_key_iv" "bytea",
	"api_key_tag" "bytea",
	"data_key_wrapped" "bytea",
	"data_key_iv" "bytea",
	"data_key_tag" "bytea",
	"kek_id" text,
	"api_key_hint" text,
	"revision" integer NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_by" uuid NOT NULL,
	CONSTRAINT "providers_api_key_complete_check" CHECK (("admin"."providers"."api_key_ciphertext" is null) = ("admin"."providers"."data_key_wrapped" is null) and ("admin"."providers"."api_key_ciphertext" is null) = ("admin"."providers"."kek_id" is null))
);
--> statement-breakpoint
CREATE TABLE "admin"."quotas" (
	"user_id" uuid PRIMARY KEY NOT NULL,
	"monthly_tokens" bigint,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_by" uuid NOT NULL
);
--> statement-breakpoint
CREATE TABLE "admin"."usage_daily" (
	"day" date NOT NULL,
	"provider" text NOT NULL,
	"model" text NOT NULL,
	"user_id" uuid NOT NULL,
	"messages" integer DEFAULT 0 NOT NULL,
	"failures" integer DEFAULT 0 NOT NULL,
	"cancelled" integer DEFAULT 0 NOT NULL,
	"cache_hits" integer DEFAULT 0 NOT NULL,
	"tokens_in" bigint DEFAULT 0 NOT NULL,
	"tokens_out" bigint DEFAULT 0 NOT NULL,
	"cost_micros" bigint DEFAULT 0 NOT NULL,
	"latency_sum_ms" bigint DEFAULT 0 NOT NULL,
	"latency_count" integer DEFAULT 0 NOT NULL,
	"latency_max_ms" integer DEFAULT 0 NOT NULL,
	"latency_bucket_00" integer DEFAULT 0 NOT NULL,
	"latency_bucket_01" integer DEFAULT 0 NOT NULL,
	"latency_bucket_02" integer DEFAULT 0 NOT NULL,
	"latency_bucket_03" integer DEFAULT 0 NOT NULL,
	"latency_bucket_04" integer DEFAULT 0 NOT NULL,
	"latency_bucket_05" integer DEFAULT 0 NOT NULL,
	"latency_bucket_06" integer DEFAULT 0 NOT NULL,
	"latency_bucket_07" integer DEFAULT 0 NOT NULL,
	"latency_bucket_08" integer DEFAULT 0 NOT NULL,
	"latency_bucket_09" integer DEFAULT 0 NOT NULL,
	"latency_bucket_10" integer DEFAULT 0 NOT NULL,
	"latency_bucket_11" integer DEFAULT 0 NOT NULL,
	"latency_bucket_12" integer DEFAULT 0 NOT NULL,
	"latency_bucket_13" integer DEFAULT 0 NOT NULL,
	"latency_bucket_14" integer DEFAULT 0 NOT NULL,
	"latency_bucket_15" integer DEFAULT 0 NOT NULL,
	"latency_bucket_16" integer DEFAULT 0 NOT NULL,
	"latency_bucket_17" integer DEFAULT 0 NOT NULL,
	"latency_bucket_18" integer DEFAULT 0 NOT NULL,
	"latency_bucket_19" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "usage_daily_day_provider_model_user_id_pk" PRIMARY KEY("day","provider","model","user_id")
);
--> statement-breakpoint
CREATE TABLE "admin"."usage_daily_model" (
	"day" date NOT NULL,
	"provider" text NOT NULL,
	"model" text NOT NULL,
	"messages" integer DEFAULT 0 NOT NULL,
	"failures" integer DEFAULT 0 NOT NULL,
	"cancelled" integer DEFAULT 0 NOT NULL,
	"cache_hits" integer DEFAULT 0 NOT NULL,
	"tokens_in" bigint DEFAULT 0 NOT NULL,
	"tokens_out" bigint DEFAULT 0 NOT NULL,
	"cost_micros" bigint DEFAULT 0 NOT NULL,
	"latency_sum_ms" bigint DEFAULT 0 NOT NULL,
	"latency_count" integer DEFAULT 0 NOT NULL,
	"latency_max_ms" integer DEFAULT 0 NOT NULL,
	"latency_bucket_00" integer DEFAULT 0 NOT NULL,
	"latency_bucket_01" integer DEFAULT 0 NOT NULL,
	"latency_bucket_02" integer DEFAULT 0 NOT NULL,
	"latency_bucket_03" integer DEFAULT 0 NOT NULL,
	"latency_bucket_04" integer DEFAULT 0 NOT NULL,
	"latency_bucket_05" integer DEFAULT 0 NOT NULL,
	"latency_bucket_06" integer DEFAULT 0 NOT NULL,
	"latency_bucket_07" integer DEFAULT 0 NOT NULL,
	"latency_bucket_08" integer DEFAULT 0 NOT NULL,
	"latency_bucket_09" integer DEFAULT 0 NOT NULL,
	"latency_bucket_10" integer DEFAULT 0 NOT NULL,
	"latency_bucket_11" integer DEFAULT 0 NOT NULL,
	"latency_bucket_12" integer DEFAULT 0 NOT NULL,
	"latency_bucket_13" integer DEFAULT 0 NOT NULL,
	"latency_bucket_14" integer DEFAULT 0 NOT NULL,
	"latency_bucket_15" integer DEFAULT 0 NOT NULL,
	"latency_bucket_16" integer DEFAULT 0 NOT NULL,
	"latency_bucket_17" integer DEFAULT 0 NOT NULL,
	"latency_bucket_18" integer DEFAULT 0 NOT NULL,
	"latency_bucket_19" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "usage_daily_model_day_provider_model_pk" PRIMARY KEY("day","provider","model")
);
--> statement-breakpoint
CREATE TABLE "admin"."usage_daily_user_tokens" (
	"day" date NOT NULL,
	"user_id" uuid NOT NULL,
	"tokens" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "usage_daily_user_tokens_day_user_id_pk" PRIMARY KEY("day","user_id")
);
--> statement-breakpoint
CREATE TABLE "admin"."usage_monthly_user" (
	"user_id" uuid NOT NULL,
	"month" date NOT NULL,
	"messages" integer DEFAULT 0 NOT NULL,
	"failures" integer DEFAULT 0 NOT NULL,
	"cancelled" integer DEFAULT 0 NOT NULL,
	"cache_hits" integer DEFAULT 0 NOT NULL,
	"tokens_in" bigint DEFAULT 0 NOT NULL,
	"tokens_out" bigint DEFAULT 0 NOT NULL,
	"cost_micros" bigint DEFAULT 0 NOT NULL,
	"latency_sum_ms" bigint DEFAULT 0 NOT NULL,
	"latency_count" integer DEFAULT 0 NOT NULL,
	"latency_max_ms" integer DEFAULT 0 NOT NULL,
	"latency_bucket_00" integer DEFAULT 0 NOT NULL,
	"latency_bucket_01" integer DEFAULT 0 NOT NULL,
	"latency_bucket_02" integer DEFAULT 0 NOT NULL,
	"latency_bucket_03" integer DEFAULT 0 NOT NULL,
	"latency_bucket_04" integer DEFAULT 0 NOT NULL,
	"latency_bucket_05" integer DEFAULT 0 NOT NULL,
	"latency_bucket_06" integer DEFAULT 0 NOT NULL,
	"latency_bucket_07" integer DEFAULT 0 NOT NULL,
	"latency_bucket_08" integer DEFAULT 0 NOT NULL,
	"latency_bucket_09" integer DEFAULT 0 NOT NULL,
	"latency_bucket_10" integer DEFAULT 0 NOT NULL,
	"latency_bucket_11" integer DEFAULT 0 NOT NULL,
	"latency_bucket_12" integer DEFAULT 0 NOT NULL,
	"latency_bucket_13" integer DEFAULT 0 NOT NULL,
	"latency_bucket_14" integer DEFAULT 0 NOT NULL,
	"latency_bucket_15" integer DEFAULT 0 NOT NULL,
	"latency_bucket_16" integer DEFAULT 0 NOT NULL,
	"latency_bucket_17" integer DEFAULT 0 NOT NULL,
	"latency_bucket_18" integer DEFAULT 0 NOT NULL,
	"latency_bucket_19" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "usage_monthly_user_user_id_month_pk" PRIMARY KEY("user_id","month")
);
--> statement-breakpoint
CREATE TABLE "admin"."usage_pending" (
	"user_id" uuid NOT NULL,
	"at" timestamp with time zone,
	"chats" integer DEFAULT 0 NOT NULL,
	"sent" integer DEFAULT 0 NOT NULL,
	"day" date,
	"provider" text,
	"model" text,
	"messages" integer DEFAULT 0 NOT NULL,
	"failures" integer DEFAULT 0 NOT NULL,
	"cancelled" integer DEFAULT 0 NOT NULL,
	"cache_hits" integer DEFAULT 0 NOT NULL,
	"tokens_in" bigint DEFAULT 0 NOT NULL,
	"tokens_out" bigint DEFAULT 0 NOT NULL,
	"cost_micros" bigint DEFAULT 0 NOT NULL,
	"latency_sum_ms" bigint DEFAULT 0 NOT NULL,
	"latency_count" integer DEFAULT 0 NOT NULL,
	"latency_max_ms" integer DEFAULT 0 NOT NULL,
	"latency_bucket_00" integer DEFAULT 0 NOT NULL,
	"latency_bucket_01" integer DEFAULT 0 NOT NULL,
	"latency_bucket_02" integer DEFAULT 0 NOT NULL,
	"latency_bucket_03" integer DEFAULT 0 NOT NULL,
	"latency_bucket_04" integer DEFAULT 0 NOT NULL,
	"latency_bucket_05" integer DEFAULT 0 NOT NULL,
	"latency_bucket_06" integer DEFAULT 0 NOT NULL,
	"latency_bucket_07" integer DEFAULT 0 NOT NULL,
	"latency_bucket_08" integer DEFAULT 0 NOT NULL,
	"latency_bucket_09" integer DEFAULT 0 NOT NULL,
	"latency_bucket_10" integer DEFAULT 0 NOT NULL,
	"latency_bucket_11" integer DEFAULT 0 NOT NULL,
	"latency_bucket_12" integer DEFAULT 0 NOT NULL,
	"latency_bucket_13" integer DEFAULT 0 NOT NULL,
	"latency_bucket_14" integer DEFAULT 0 NOT NULL,
	"latency_bucket_15" integer DEFAULT 0 NOT NULL,
	"latency_bucket_16" integer DEFAULT 0 NOT NULL,
	"latency_bucket_17" integer DEFAULT 0 NOT NULL,
	"latency_bucket_18" integer DEFAULT 0 NOT NULL,
	"latency_bucket_19" integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE TABLE "admin"."user_totals" (
	"user_id" uuid PRIMARY KEY NOT NULL,
	"chats" integer DEFAULT 0 NOT NULL,
	"messages" bigint DEFAULT 0 NOT NULL,
	"tokens_in" bigint DEFAULT 0 NOT NULL,
	"tokens_out" bigint DEFAULT 0 NOT NULL,
	"last_active_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "admin"."users" (
	"id" uuid PRIMARY KEY NOT NULL,
	"email" text NOT NULL,
	"name" text,
	"role" text DEFAULT 'user' NOT NULL,
	"status" text DEFAULT 'active' NOT NULL,
	"mfa_enabled" boolean DEFAULT false NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"last_login_at" timestamp with time zone,
	"disabled_at" timestamp with time zone,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "users_role_check" CHECK ("admin"."users"."role" in ('user', 'admin')),
	CONSTRAINT "users_status_check" CHECK ("admin"."users"."status" in ('active', 'disabled'))
);
--> statement-breakpoint
CREATE INDEX "audit_events_occurred_idx" ON "admin"."audit_events" USING btree ("occurred_at","id");--> statement-breakpoint
CREATE INDEX "audit_events_user_idx" ON "admin"."audit_events" USING btree ("user_id","occurred_at","id");--> statement-breakpoint
CREATE INDEX "audit_events_actor_idx" ON "admin"."audit_events" USING btree ("actor_user_id","occurred_at","id");--> statement-breakpoint
CREATE INDEX "audit_events_type_idx" ON "admin"."audit_events" USING btree ("type" text_pattern_ops,"occurred_at","id");--> statement-breakpoint
CREATE INDEX "usage_daily_user_day_idx" ON "admin"."usage_daily" USING btree ("user_id","day");--> statement-breakpoint
CREATE INDEX "users_created_at_id_idx" ON "admin"."users" USING btree ("created_at","id");--> statement-breakpoint
CREATE INDEX "users_email_lower_idx" ON "admin"."users" USING btree (lower("email") text_pattern_ops);--> statement-breakpoint
CREATE INDEX "users_email_domain_idx" ON "admin"."users" USING btree (lower(split_part("email", '@', 2)) text_pattern_ops);--> statement-breakpoint
CREATE INDEX "users_name_lower_idx" ON "admin"."users" USING btree (lower("name") text_pattern_ops);--> statement-breakpoint
CREATE INDEX "users_active_admins_idx" ON "admin"."users" USING btree ("id") WHERE "admin"."users"."role" = 'admin' and "admin"."users"."status" = 'active';