-- Model storage named by a model id, and SHA-256 cache keys.
--
-- Caches used to be sieve_cache."<name>_v<version>" keyed by md5(input)::uuid: two names sharing
-- a 61-byte prefix were truncated to one table (63-byte identifiers), and an MD5-colliding pair
-- of inputs shared one output. Now each model has an id, its caches are sieve_cache.m<id>_v<n>
-- and keyed by sha256(input) (bytea). Old caches are only caches: they are dropped here, and the
-- server re-installs each registered model's SQL function (new table, new digest) when it starts.
CREATE SEQUENCE IF NOT EXISTS sieve.model_ids;
ALTER TABLE sieve.models ADD COLUMN IF NOT EXISTS id bigint;
UPDATE sieve.models SET id = nextval('sieve.model_ids') WHERE id IS NULL;
ALTER TABLE sieve.models
    ALTER COLUMN id SET DEFAULT nextval('sieve.model_ids'),
    ALTER COLUMN id SET NOT NULL,
    ADD CONSTRAINT models_id_key UNIQUE (id);
ALTER SEQUENCE sieve.model_ids OWNED BY sieve.models.id;

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
             WHERE s.nspname = 'sieve_cache' AND c.relkind = 'r'
    LOOP
        EXECUTE format('DROP TABLE sieve_cache.%I', t.relname);
    END LOOP;
END
$$;

-- Forget a model's cached outputs (all versions); returns the number of rows removed.
CREATE OR REPLACE FUNCTION sieve.clear_cache(model text) RETURNS bigint
LANGUAGE plpgsql AS $$
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
