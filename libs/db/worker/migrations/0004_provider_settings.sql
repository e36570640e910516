CREATE TABLE "worker"."provider_settings" (
	"provider_id" text PRIMARY KEY NOT NULL,
	"kind" text NOT NULL,
	"enabled" boolean NOT NULL,
	"base_url" text,
	"models" jsonb NOT NULL,
	"routing" jsonb NOT NULL,
	"api_key_envelope" jsonb,
	"revision" integer NOT NULL,
	"updated_at" timestamp with time zone NOT NULL
);
