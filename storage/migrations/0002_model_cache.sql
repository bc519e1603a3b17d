-- Model output caches live in their own schema, one table per model version.
CREATE SCHEMA IF NOT EXISTS sieve_cache;

-- Called by a model's installed SQL function when an input's output was never materialized:
-- only reachable when the statement bypassed SieveDB's planner (e.g. a direct Postgres client).
CREATE OR REPLACE FUNCTION sieve.not_materialized(model text, version integer) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'output of model % (version %) is not materialized for this input', model, version
        USING ERRCODE = '55000',
              HINT = 'Run the query through SieveDB, which runs the model for the inputs it needs.';
END
$$;

-- Forget a model's cached outputs (all versions); returns the number of rows removed.
CREATE OR REPLACE FUNCTION sieve.clear_cache(model text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    removed bigint := 0;
    n bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM sieve.models m WHERE m.name = model) THEN
        RAISE EXCEPTION 'model % does not exist', model USING ERRCODE = '42883';
    END IF;
    FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
             WHERE s.nspname = 'sieve_cache' AND c.relkind = 'r'
               AND c.relname ~ ('^' || regexp_replace(model, '([^a-zA-Z0-9_])', '\\\1', 'g') || '_v[0-9]+$')
    LOOP
        EXECUTE format('DELETE FROM sieve_cache.%I', t.relname);
        GET DIAGNOSTICS n = ROW_COUNT;
        removed := removed + n;
    END LOOP;
    RETURN removed;
END
$$;
