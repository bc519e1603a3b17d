-- Under SET sieve.lenient = on an unmaterialized output reads as NULL instead of an error: the
-- planner uses it for statements that carry their own guard against such rows (LIMIT early
-- stop), where Postgres may still evaluate the function before testing the guard.
CREATE OR REPLACE FUNCTION sieve.not_materialized(model text, version integer) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('sieve.lenient', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'output of model % (version %) is not materialized for this input', model, version
        USING ERRCODE = '55000',
              HINT = 'Run the query through SieveDB, which runs the model for the inputs it needs.';
END
$$;
