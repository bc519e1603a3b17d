-- Approximate queries record how they ran, for the status page's picture of a run: the proxy-score
-- histogram over the candidates, the sampled rows' scores and labels (capped), the thresholds
-- the operator chose, the target and the level certified. NULL for exact queries. Row-level
-- security on sieve.query_log covers it: each role sees its own runs.
ALTER TABLE sieve.query_log ADD COLUMN IF NOT EXISTS trace jsonb;
