-- Claims made before claimed_until existed kept their lease in next_run_at alone. Until they end,
-- a lease still ahead counts as a claim, so that an instance registering a new interval during
-- this rollout cannot cut one short (the new interval then applies from that run's end).
UPDATE "worker"."schedules" SET "claimed_until" = "next_run_at" WHERE "claimed_until" IS NULL AND "next_run_at" > now();
