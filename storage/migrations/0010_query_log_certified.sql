-- Approximate queries: whether every target was met (by the bound the query used), whether the
-- answer is certified (a finite-sample bound, valid on any data,
-- meets every target), the level that bound certifies, how many rows (units) were labelled
-- against the budget (model_calls counts model invocations, which cache hits and repeated inputs
-- make different), and per-group estimates of a GROUP BY.
ALTER TABLE sieve.query_log
    ADD COLUMN IF NOT EXISTS target_met boolean,
    ADD COLUMN IF NOT EXISTS certified boolean,
    ADD COLUMN IF NOT EXISTS certified_level double precision,
    ADD COLUMN IF NOT EXISTS rows_labelled bigint,
    ADD COLUMN IF NOT EXISTS groups jsonb;
