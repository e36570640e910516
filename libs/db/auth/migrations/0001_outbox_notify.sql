-- Wakes the outbox relay as soon as a transaction that wrote events commits (NOTIFY is delivered
-- on commit, and identical notifications of one transaction are folded into one).
CREATE FUNCTION "auth"."outbox_notify"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('vivier_outbox_auth', '');
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "outbox_notify" AFTER INSERT ON "auth"."outbox" FOR EACH STATEMENT EXECUTE FUNCTION "auth"."outbox_notify"();
