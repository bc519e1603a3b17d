-- Measured execution statistics per model (batch sizes, requests, rows), refreshed after each
-- query that ran the model; cost_ms_per_row holds the per-device cost the planner uses.
ALTER TABLE sieve.models ADD COLUMN IF NOT EXISTS stats jsonb NOT NULL DEFAULT '{}'::jsonb;
