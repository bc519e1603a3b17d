-- SieveDB system catalog, version 1: registered models and the per-query log.
CREATE TABLE IF NOT EXISTS sieve.models (
    name          text PRIMARY KEY,
    path          text NOT NULL,
    content_hash  text NOT NULL,
    version       integer NOT NULL DEFAULT 1,
    signature     jsonb NOT NULL DEFAULT '{}'::jsonb,
    options       jsonb NOT NULL DEFAULT '{}'::jsonb,
    cost_ms_per_row jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sieve.query_log (
    query_id     bigserial PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    query        text NOT NULL,
    mode         text NOT NULL,
    model_calls  jsonb NOT NULL DEFAULT '{}'::jsonb,
    cache_hits   bigint NOT NULL DEFAULT 0,
    target       double precision,
    confidence   double precision,
    estimate     double precision,
    ci_low       double precision,
    ci_high      double precision,
    elapsed_ms   double precision
);

CREATE INDEX IF NOT EXISTS query_log_started_at ON sieve.query_log (started_at);
