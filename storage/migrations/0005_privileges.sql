-- Least privilege. SQL derived from a client's statement runs in that client's own session, so
-- every role needs to read what model functions read; nothing more.
--
-- Registering a model loads a file into the server, like an untrusted language: superusers and
-- members of sieve_model_admin only. Roles are cluster-wide: another database may have made it.
DO $$
BEGIN
    CREATE ROLE sieve_model_admin NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

GRANT USAGE ON SCHEMA sieve TO PUBLIC;
GRANT USAGE ON SCHEMA sieve_cache TO PUBLIC;
-- Like pg_proc, the model catalog is readable by every role.
GRANT SELECT ON sieve.models TO PUBLIC;

-- Each role sees its own query log rows (superusers, who bypass row-level security, see all).
ALTER TABLE sieve.query_log ADD COLUMN IF NOT EXISTS role name NOT NULL DEFAULT session_user;
ALTER TABLE sieve.query_log ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS own_rows ON sieve.query_log;
CREATE POLICY own_rows ON sieve.query_log FOR SELECT USING (role = session_user);
GRANT SELECT ON sieve.query_log TO PUBLIC;
