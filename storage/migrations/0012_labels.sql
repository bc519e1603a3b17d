-- Humans as the oracle (issue 13): functions whose outputs are labels people give. Their labels
-- live in the model's cache table like any model output; these tables hold what is asked of
-- people (the queue), what they answered (the history) and the links that let them answer.

-- The SQL function of each labels model (sieve.models.id): who may see its requests is who may
-- EXECUTE it, checked by OID as the caches' policies do (a rename keeps it).
CREATE TABLE IF NOT EXISTS sieve.label_functions (
    model_id     bigint PRIMARY KEY REFERENCES sieve.models (id) ON DELETE CASCADE,
    function_oid oid NOT NULL
);

-- One row per (function, input): pending until a label is given, then answered, then used once
-- a statement has read the label (counted as that statement's model call). Inputs are what the
-- labeller is shown: each argument's value, bytea as bytea, every other type as its text.
CREATE TABLE IF NOT EXISTS sieve.label_queue (
    request_id   bigserial PRIMARY KEY,
    model_id     bigint NOT NULL REFERENCES sieve.models (id) ON DELETE CASCADE,
    digest       bytea NOT NULL,
    input_names  text[] NOT NULL,
    input_types  text[] NOT NULL,
    input_text   text[] NOT NULL,   -- NULL entries for bytea arguments
    input_bytes  bytea[] NOT NULL,  -- NULL entries for the other arguments
    table_oid    oid,               -- provenance: a plain column of one table with a primary key
    table_name   text,
    key          text,
    requested_by name NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    query        text,
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'answered', 'used')),
    answered_by  name,
    answered_at  timestamptz,
    UNIQUE (model_id, digest)
);
CREATE INDEX IF NOT EXISTS label_queue_pending ON sieve.label_queue (model_id, request_id)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS label_queue_answered ON sieve.label_queue (model_id)
    WHERE state = 'answered';
CREATE INDEX IF NOT EXISTS label_queue_source ON sieve.label_queue (model_id, table_oid, key);

-- Every label given, changed or taken back: who, when, the value, the function's version then.
CREATE TABLE IF NOT EXISTS sieve.label_history (
    entry_id    bigserial PRIMARY KEY,
    model_id    bigint NOT NULL REFERENCES sieve.models (id) ON DELETE CASCADE,
    request_id  bigint REFERENCES sieve.label_queue (request_id) ON DELETE SET NULL,
    digest      bytea NOT NULL,
    action      text NOT NULL CHECK (action IN ('label', 'relabel', 'undo')),
    value       jsonb,
    previous    jsonb,
    version     integer NOT NULL,
    labelled_by name NOT NULL,
    labelled_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS label_history_digest ON sieve.label_history (model_id, digest, entry_id);

-- Links to the labelling and status pages: only the SHA-256 of a token is kept.
CREATE TABLE IF NOT EXISTS sieve.label_tokens (
    token_sha256 bytea PRIMARY KEY,
    role         name NOT NULL,
    database     name NOT NULL,
    model_id     bigint REFERENCES sieve.models (id) ON DELETE CASCADE,
    scope        text NOT NULL CHECK (scope IN ('label', 'status')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

-- The pending requests, to roles that may EXECUTE the function (the queue itself is SieveDB's).
CREATE OR REPLACE VIEW sieve.label_requests WITH (security_barrier) AS
    SELECT q.request_id, m.name AS function, q.table_name AS "table", q.key,
           q.requested_by, q.requested_at
    FROM sieve.label_queue q
    JOIN sieve.models m ON m.id = q.model_id
    JOIN sieve.label_functions f ON f.model_id = q.model_id
    WHERE q.state = 'pending' AND pg_catalog.has_function_privilege(f.function_oid, 'EXECUTE');
GRANT SELECT ON sieve.label_requests TO PUBLIC;

-- Run through SieveDB (labels are written on its connection); here, a clear error. Key and
-- value are polymorphic in two families, so sieve.label('f', 'photos', 42, true) resolves.
CREATE OR REPLACE FUNCTION sieve.label(function text, "table" text, key anyelement, value anycompatible)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sieve.label runs through SieveDB, not directly in Postgres'
        USING ERRCODE = '0A000', HINT = 'connect to the SieveDB server and run it as a single SELECT';
END $$;
CREATE OR REPLACE FUNCTION sieve.unlabel(function text, "table" text, key anyelement)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sieve.unlabel runs through SieveDB, not directly in Postgres'
        USING ERRCODE = '0A000', HINT = 'connect to the SieveDB server and run it as a single SELECT';
END $$;
CREATE OR REPLACE FUNCTION sieve.labelling_link(function text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sieve.labelling_link runs through SieveDB, not directly in Postgres'
        USING ERRCODE = '0A000', HINT = 'connect to the SieveDB server and run it as a single SELECT';
END $$;
CREATE OR REPLACE FUNCTION sieve.status_link() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sieve.status_link runs through SieveDB, not directly in Postgres'
        USING ERRCODE = '0A000', HINT = 'connect to the SieveDB server and run it as a single SELECT';
END $$;
GRANT EXECUTE ON FUNCTION sieve.label(text, text, anyelement, anycompatible) TO PUBLIC;
GRANT EXECUTE ON FUNCTION sieve.unlabel(text, text, anyelement) TO PUBLIC;
GRANT EXECUTE ON FUNCTION sieve.labelling_link(text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION sieve.status_link() TO PUBLIC;
