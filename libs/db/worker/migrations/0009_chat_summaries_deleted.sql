ALTER TABLE "worker"."chat_summaries" ALTER COLUMN "summary" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "worker"."chat_summaries" ALTER COLUMN "through_id" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "worker"."chat_summaries" ALTER COLUMN "through_at" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "worker"."chat_summaries" ADD COLUMN "deleted_at" timestamp with time zone;