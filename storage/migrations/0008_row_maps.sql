-- Row maps (planner/row_maps.py) hold copies of a model's outputs keyed by row identity, in
-- sieve_cache.m<id>_v<n>_r<table oid>_c<attnums>: forgetting the model's outputs forgets them too.
CREATE OR REPLACE FUNCTION sieve.clear_cache(model text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    model_id bigint;
    t record;
    removed bigint := 0;
    n bigint;
BEGIN
    SELECT m.id INTO model_id FROM sieve.models m WHERE m.name = model;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % does not exist', model USING ERRCODE = '42883';
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_proc p JOIN pg_namespace s ON s.oid = p.pronamespace
        WHERE s.nspname = 'public' AND p.proname = model
          AND pg_has_role(session_user, p.proowner, 'USAGE')
    ) THEN
        RAISE EXCEPTION 'must be owner of function %', model USING ERRCODE = '42501';
    END IF;
    FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
             WHERE s.nspname = 'sieve_cache' AND c.relkind = 'r'
               AND c.relname ~ ('^m' || model_id || '_v[0-9]+_r[0-9]+_c[0-9_]+$')
    LOOP
        EXECUTE format('TRUNCATE sieve_cache.%I', t.relname);
    END LOOP;
    FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
             WHERE s.nspname = 'sieve_cache' AND c.relkind = 'r'
               AND c.relname ~ ('^m' || model_id || '_v[0-9]+$')
    LOOP
        EXECUTE format('DELETE FROM sieve_cache.%I', t.relname);
        GET DIAGNOSTICS n = ROW_COUNT;
        removed := removed + n;
    END LOOP;
    RETURN removed;
END
$$;
GRANT EXECUTE ON FUNCTION sieve.clear_cache(text) TO PUBLIC;
