-- The relations a view reads, through the views it reads (not the view itself): the planner
-- asks whether the client may read them, to know whether a model view must be read whole, as
-- its owner reads it, instead of inlined into the client's statement.
CREATE OR REPLACE FUNCTION sieve.view_relations(view_oid oid) RETURNS SETOF oid
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE reads(rel) AS (
        SELECT d.refobjid FROM pg_rewrite r
        JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
        WHERE r.ev_class = view_oid AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> view_oid
      UNION
        SELECT d.refobjid FROM reads
        JOIN pg_rewrite r ON r.ev_class = reads.rel
        JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
        WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid <> reads.rel
    )
    SELECT rel FROM reads
$$;
GRANT EXECUTE ON FUNCTION sieve.view_relations(oid) TO PUBLIC;
