CREATE TABLE "auth"."oidc_mfa_challenges" (
	"token_hash" text PRIMARY KEY NOT NULL,
	"user_id" uuid NOT NULL,
	"provider" text NOT NULL,
	"attempts" bigint DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "auth"."oidc_mfa_challenges" ADD CONSTRAINT "oidc_mfa_challenges_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "auth"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "oidc_mfa_challenges_expires_idx" ON "auth"."oidc_mfa_challenges" USING btree ("expires_at");--> statement-breakpoint
CREATE INDEX "oidc_mfa_challenges_user_idx" ON "auth"."oidc_mfa_challenges" USING btree ("user_id");