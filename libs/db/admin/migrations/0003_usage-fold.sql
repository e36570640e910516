-- Folds what one transaction's chat-event handlers wrote to admin.usage_pending into the per-user
-- totals and the usage aggregates, when that transaction commits. A deferred constraint trigger
-- fires once per pending row at commit; the first firing folds every pending row of the
-- transaction (grouped by key, upserted in key order, so concurrent transactions lock rows in the
-- same order and cannot deadlock) and marks the transaction done; the others return at once.
-- Pending rows of other transactions are invisible (uncommitted), and none outlives its
-- transaction (folded before the commit).
CREATE FUNCTION "admin"."fold_usage_pending"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('vivier.admin_usage_folded', true) = pg_current_xact_id()::text THEN
    RETURN NULL;
  END IF;
  PERFORM set_config('vivier.admin_usage_folded', pg_current_xact_id()::text, true);

  WITH pending AS (
    DELETE FROM "admin"."usage_pending" RETURNING *
  ), totals AS (
    INSERT INTO "admin"."user_totals" AS x (user_id, chats, messages, tokens_in, tokens_out, last_active_at)
    SELECT user_id, sum(chats), sum(sent) + sum(messages), sum(tokens_in), sum(tokens_out), max(at)
    FROM pending GROUP BY user_id ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE SET
      chats = x.chats + excluded.chats,
      messages = x.messages + excluded.messages,
      tokens_in = x.tokens_in + excluded.tokens_in,
      tokens_out = x.tokens_out + excluded.tokens_out,
      last_active_at = greatest(x.last_active_at, excluded.last_active_at)
  ), daily AS (
    INSERT INTO "admin"."usage_daily" AS x (day, provider, model, user_id, messages, failures, cancelled, cache_hits, tokens_in, tokens_out, cost_micros, latency_sum_ms, latency_count, latency_max_ms, latency_bucket_00, latency_bucket_01, latency_bucket_02, latency_bucket_03, latency_bucket_04, latency_bucket_05, latency_bucket_06, latency_bucket_07, latency_bucket_08, latency_bucket_09, latency_bucket_10, latency_bucket_11, latency_bucket_12, latency_bucket_13, latency_bucket_14, latency_bucket_15, latency_bucket_16, latency_bucket_17, latency_bucket_18, latency_bucket_19)
    SELECT day, provider, model, user_id, sum(messages), sum(failures), sum(cancelled), sum(cache_hits), sum(tokens_in), sum(tokens_out), sum(cost_micros), sum(latency_sum_ms), sum(latency_count), max(latency_max_ms), sum(latency_bucket_00), sum(latency_bucket_01), sum(latency_bucket_02), sum(latency_bucket_03), sum(latency_bucket_04), sum(latency_bucket_05), sum(latency_bucket_06), sum(latency_bucket_07), sum(latency_bucket_08), sum(latency_bucket_09), sum(latency_bucket_10), sum(latency_bucket_11), sum(latency_bucket_12), sum(latency_bucket_13), sum(latency_bucket_14), sum(latency_bucket_15), sum(latency_bucket_16), sum(latency_bucket_17), sum(latency_bucket_18), sum(latency_bucket_19)
    FROM pending WHERE model IS NOT NULL GROUP BY day, provider, model, user_id ORDER BY day, provider, model, user_id
    ON CONFLICT (day, provider, model, user_id) DO UPDATE SET
      messages = x.messages + excluded.messages,
      failures = x.failures + excluded.failures,
      cancelled = x.cancelled + excluded.cancelled,
      cache_hits = x.cache_hits + excluded.cache_hits,
      tokens_in = x.tokens_in + excluded.tokens_in,
      tokens_out = x.tokens_out + excluded.tokens_out,
      cost_micros = x.cost_micros + excluded.cost_micros,
      latency_sum_ms = x.latency_sum_ms + excluded.latency_sum_ms,
      latency_count = x.latency_count + excluded.latency_count,
      latency_max_ms = greatest(x.latency_max_ms, excluded.latency_max_ms),
      latency_bucket_00 = x.latency_bucket_00 + excluded.latency_bucket_00,
      latency_bucket_01 = x.latency_bucket_01 + excluded.latency_bucket_01,
      latency_bucket_02 = x.latency_bucket_02 + excluded.latency_bucket_02,
      latency_bucket_03 = x.latency_bucket_03 + excluded.latency_bucket_03,
      latency_bucket_04 = x.latency_bucket_04 + excluded.latency_bucket_04,
      latency_bucket_05 = x.latency_bucket_05 + excluded.latency_bucket_05,
      latency_bucket_06 = x.latency_bucket_06 + excluded.latency_bucket_06,
      latency_bucket_07 = x.latency_bucket_07 + excluded.latency_bucket_07,
      latency_bucket_08 = x.latency_bucket_08 + excluded.latency_bucket_08,
      latency_bucket_09 = x.latency_bucket_09 + excluded.latency_bucket_09,
      latency_bucket_10 = x.latency_bucket_10 + excluded.latency_bucket_10,
      latency_bucket_11 = x.latency_bucket_11 + excluded.latency_bucket_11,
      latency_bucket_12 = x.latency_bucket_12 + excluded.latency_bucket_12,
      latency_bucket_13 = x.latency_bucket_13 + excluded.latency_bucket_13,
      latency_bucket_14 = x.latency_bucket_14 + excluded.latency_bucket_14,
      latency_bucket_15 = x.latency_bucket_15 + excluded.latency_bucket_15,
      latency_bucket_16 = x.latency_bucket_16 + excluded.latency_bucket_16,
      latency_bucket_17 = x.latency_bucket_17 + excluded.latency_bucket_17,
      latency_bucket_18 = x.latency_bucket_18 + excluded.latency_bucket_18,
      latency_bucket_19 = x.latency_bucket_19 + excluded.latency_bucket_19
  ), daily_model AS (
    INSERT INTO "admin"."usage_daily_model" AS x (day, provider, model, messages, failures, cancelled, cache_hits, tokens_in, tokens_out, cost_micros, latency_sum_ms, latency_count, latency_max_ms, latency_bucket_00, latency_bucket_01, latency_bucket_02, latency_bucket_03, latency_bucket_04, latency_bucket_05, latency_bucket_06, latency_bucket_07, latency_bucket_08, latency_bucket_09, latency_bucket_10, latency_bucket_11, latency_bucket_12, latency_bucket_13, latency_bucket_14, latency_bucket_15, latency_bucket_16, latency_bucket_17, latency_bucket_18, latency_bucket_19)
    SELECT day, provider, model, sum(messages), sum(failures), sum(cancelled), sum(cache_hits), sum(tokens_in), sum(tokens_out), sum(cost_micros), sum(latency_sum_ms), sum(latency_count), max(latency_max_ms), sum(latency_bucket_00), sum(latency_bucket_01), sum(latency_bucket_02), sum(latency_bucket_03), sum(latency_bucket_04), sum(latency_bucket_05), sum(latency_bucket_06), sum(latency_bucket_07), sum(latency_bucket_08), sum(latency_bucket_09), sum(latency_bucket_10), sum(latency_bucket_11), sum(latency_bucket_12), sum(latency_bucket_13), sum(latency_bucket_14), sum(latency_bucket_15), sum(latency_bucket_16), sum(latency_bucket_17), sum(latency_bucket_18), sum(latency_bucket_19)
    FROM pending WHERE model IS NOT NULL GROUP BY day, provider, model ORDER BY day, provider, model
    ON CONFLICT (day, provider, model) DO UPDATE SET
      messages = x.messages + excluded.messages,
      failures = x.failures + excluded.failures,
      cancelled = x.cancelled + excluded.cancelled,
      cache_hits = x.cache_hits + excluded.cache_hits,
      tokens_in = x.tokens_in + excluded.tokens_in,
      tokens_out = x.tokens_out + excluded.tokens_out,
      cost_micros = x.cost_micros + excluded.cost_micros,
      latency_sum_ms = x.latency_sum_ms + excluded.latency_sum_ms,
      latency_count = x.latency_count + excluded.latency_count,
      latency_max_ms = greatest(x.latency_max_ms, excluded.latency_max_ms),
      latency_bucket_00 = x.latency_bucket_00 + excluded.latency_bucket_00,
      latency_bucket_01 = x.latency_bucket_01 + excluded.latency_bucket_01,
      latency_bucket_02 = x.latency_bucket_02 + excluded.latency_bucket_02,
      latency_bucket_03 = x.latency_bucket_03 + excluded.latency_bucket_03,
      latency_bucket_04 = x.latency_bucket_04 + excluded.latency_bucket_04,
      latency_bucket_05 = x.latency_bucket_05 + excluded.latency_bucket_05,
      latency_bucket_06 = x.latency_bucket_06 + excluded.latency_bucket_06,
      latency_bucket_07 = x.latency_bucket_07 + excluded.latency_bucket_07,
      latency_bucket_08 = x.latency_bucket_08 + excluded.latency_bucket_08,
      latency_bucket_09 = x.latency_bucket_09 + excluded.latency_bucket_09,
      latency_bucket_10 = x.latency_bucket_10 + excluded.latency_bucket_10,
      latency_bucket_11 = x.latency_bucket_11 + excluded.latency_bucket_11,
      latency_bucket_12 = x.latency_bucket_12 + excluded.latency_bucket_12,
      latency_bucket_13 = x.latency_bucket_13 + excluded.latency_bucket_13,
      latency_bucket_14 = x.latency_bucket_14 + excluded.latency_bucket_14,
      latency_bucket_15 = x.latency_bucket_15 + excluded.latency_bucket_15,
      latency_bucket_16 = x.latency_bucket_16 + excluded.latency_bucket_16,
      latency_bucket_17 = x.latency_bucket_17 + excluded.latency_bucket_17,
      latency_bucket_18 = x.latency_bucket_18 + excluded.latency_bucket_18,
      latency_bucket_19 = x.latency_bucket_19 + excluded.latency_bucket_19
  ), daily_user_tokens AS (
    INSERT INTO "admin"."usage_daily_user_tokens" AS x (day, user_id, tokens)
    SELECT day, user_id, sum(tokens_in) + sum(tokens_out)
    FROM pending WHERE model IS NOT NULL GROUP BY day, user_id ORDER BY day, user_id
    ON CONFLICT (day, user_id) DO UPDATE SET tokens = x.tokens + excluded.tokens
  )
  INSERT INTO "admin"."usage_monthly_user" AS x (user_id, month, messages, failures, cancelled, cache_hits, tokens_in, tokens_out, cost_micros, latency_sum_ms, latency_count, latency_max_ms, latency_bucket_00, latency_bucket_01, latency_bucket_02, latency_bucket_03, latency_bucket_04, latency_bucket_05, latency_bucket_06, latency_bucket_07, latency_bucket_08, latency_bucket_09, latency_bucket_10, latency_bucket_11, latency_bucket_12, latency_bucket_13, latency_bucket_14, latency_bucket_15, latency_bucket_16, latency_bucket_17, latency_bucket_18, latency_bucket_19)
  SELECT user_id, date_trunc('month', day)::date, sum(messages), sum(failures), sum(cancelled), sum(cache_hits), sum(tokens_in), sum(tokens_out), sum(cost_micros), sum(latency_sum_ms), sum(latency_count), max(latency_max_ms), sum(latency_bucket_00), sum(latency_bucket_01), sum(latency_bucket_02), sum(latency_bucket_03), sum(latency_bucket_04), sum(latency_bucket_05), sum(latency_bucket_06), sum(latency_bucket_07), sum(latency_bucket_08), sum(latency_bucket_09), sum(latency_bucket_10), sum(latency_bucket_11), sum(latency_bucket_12), sum(latency_bucket_13), sum(latency_bucket_14), sum(latency_bucket_15), sum(latency_bucket_16), sum(latency_bucket_17), sum(latency_bucket_18), sum(latency_bucket_19)
  FROM pending WHERE model IS NOT NULL GROUP BY user_id, date_trunc('month', day)::date ORDER BY 1, 2
  ON CONFLICT (user_id, month) DO UPDATE SET
      messages = x.messages + excluded.messages,
      failures = x.failures + excluded.failures,
      cancelled = x.cancelled + excluded.cancelled,
      cache_hits = x.cache_hits + excluded.cache_hits,
      tokens_in = x.tokens_in + excluded.tokens_in,
      tokens_out = x.tokens_out + excluded.tokens_out,
      cost_micros = x.cost_micros + excluded.cost_micros,
      latency_sum_ms = x.latency_sum_ms + excluded.latency_sum_ms,
      latency_count = x.latency_count + excluded.latency_count,
      latency_max_ms = greatest(x.latency_max_ms, excluded.latency_max_ms),
      latency_bucket_00 = x.latency_bucket_00 + excluded.latency_bucket_00,
      latency_bucket_01 = x.latency_bucket_01 + excluded.latency_bucket_01,
      latency_bucket_02 = x.latency_bucket_02 + excluded.latency_bucket_02,
      latency_bucket_03 = x.latency_bucket_03 + excluded.latency_bucket_03,
      latency_bucket_04 = x.latency_bucket_04 + excluded.latency_bucket_04,
      latency_bucket_05 = x.latency_bucket_05 + excluded.latency_bucket_05,
      latency_bucket_06 = x.latency_bucket_06 + excluded.latency_bucket_06,
      latency_bucket_07 = x.latency_bucket_07 + excluded.latency_bucket_07,
      latency_bucket_08 = x.latency_bucket_08 + excluded.latency_bucket_08,
      latency_bucket_09 = x.latency_bucket_09 + excluded.latency_bucket_09,
      latency_bucket_10 = x.latency_bucket_10 + excluded.latency_bucket_10,
      latency_bucket_11 = x.latency_bucket_11 + excluded.latency_bucket_11,
      latency_bucket_12 = x.latency_bucket_12 + excluded.latency_bucket_12,
      latency_bucket_13 = x.latency_bucket_13 + excluded.latency_bucket_13,
      latency_bucket_14 = x.latency_bucket_14 + excluded.latency_bucket_14,
      latency_bucket_15 = x.latency_bucket_15 + excluded.latency_bucket_15,
      latency_bucket_16 = x.latency_bucket_16 + excluded.latency_bucket_16,
      latency_bucket_17 = x.latency_bucket_17 + excluded.latency_bucket_17,
      latency_bucket_18 = x.latency_bucket_18 + excluded.latency_bucket_18,
      latency_bucket_19 = x.latency_bucket_19 + excluded.latency_bucket_19;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE CONSTRAINT TRIGGER "usage_pending_fold" AFTER INSERT ON "admin"."usage_pending"
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "admin"."fold_usage_pending"();
