ALTER TABLE "auth"."signing_keys" ADD COLUMN "activates_at" timestamp with time zone DEFAULT now() NOT NULL;
--> statement-breakpoint
UPDATE "auth"."signing_keys" SET "activates_at" = "created_at";
