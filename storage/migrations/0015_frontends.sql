-- Several SieveDB front-ends over one Postgres (issue 14).
--
-- 1. The registry through which a front-end forwards a CancelRequest meant for another one
--    (server/peers.py): each live front-end has a row, refreshed by its heartbeat; its id is
--    encoded in the cancel keys it gives clients. Rows without a recent heartbeat are stale.
CREATE TABLE IF NOT EXISTS sieve.frontends (
    id        smallint PRIMARY KEY CHECK (id BETWEEN 1 AND 127),
    address   text NOT NULL,                       -- host:port peers send CancelRequests to
    started   timestamptz NOT NULL DEFAULT now(),
    heartbeat timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON sieve.frontends FROM PUBLIC;

-- 2. Catalog changes reach every front-end (planner/catalog_events.py LISTENs on the channel).
--    NOTIFY is transactional: sent at commit, never for a rolled-back change. Only the columns
--    that make a model what it is: the per-query cost and stats updates must not reload anyone.
CREATE OR REPLACE FUNCTION sieve.notify_catalog() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('sieve_catalog', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS catalog_changed ON sieve.models;
CREATE TRIGGER catalog_changed
    AFTER INSERT OR DELETE OR TRUNCATE
       OR UPDATE OF name, path, content_hash, version, signature, options, id
    ON sieve.models FOR EACH STATEMENT EXECUTE FUNCTION sieve.notify_catalog();

DROP TRIGGER IF EXISTS catalog_changed ON sieve.assertions;
CREATE TRIGGER catalog_changed
    AFTER INSERT OR DELETE OR TRUNCATE
       OR UPDATE OF name, kind, definition, query, relation, features, per, key, models
    ON sieve.assertions FOR EACH STATEMENT EXECUTE FUNCTION sieve.notify_catalog();

-- Views over models are made by plain DDL that SieveDB forwards, possibly inside a client's
-- transaction: an event trigger notifies at that transaction's commit, whoever ran it. Only a
-- superuser may create one; under another backing role the front-end that forwarded the DDL
-- notifies instead (after Postgres answered it: planner/planner.py).
CREATE OR REPLACE FUNCTION sieve.notify_ddl() RETURNS event_trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('sieve_catalog', 'ddl');
END
$$;

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        DROP EVENT TRIGGER IF EXISTS sieve_catalog_ddl;
        CREATE EVENT TRIGGER sieve_catalog_ddl ON ddl_command_end
            WHEN TAG IN ('CREATE VIEW', 'ALTER VIEW', 'DROP VIEW', 'ALTER TABLE', 'DROP TABLE',
                         'DROP SCHEMA', 'ALTER SCHEMA', 'DROP FUNCTION', 'ALTER FUNCTION')
            EXECUTE FUNCTION sieve.notify_ddl();
    END IF;
END
$$;
