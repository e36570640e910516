CREATE TABLE "chat"."quota_holders" (
	"holder" uuid PRIMARY KEY NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "chat"."quota_holds" (
	"holder" uuid NOT NULL,
	"user_id" uuid NOT NULL,
	"month" date NOT NULL,
	"tokens" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "quota_holds_holder_user_id_month_pk" PRIMARY KEY("holder","user_id","month"),
	CONSTRAINT "quota_holds_tokens_check" CHECK ("chat"."quota_holds"."tokens" >= 0)
);
