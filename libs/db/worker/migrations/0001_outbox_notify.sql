-- Wakes the outbox relay as soon as a transaction that wrote events commits (NOTIFY is delivered
-- on commit, and identical notifications of one transaction are folded into one).
CREATE FUNCTION "worker"."outbox_notify"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('vivier_outbox_worker', '');
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "outbox_notify" AFTER INSERT ON "worker"."outbox" FOR EACH STATEMENT EXECUTE FUNCTION "worker"."outbox_notify"();
