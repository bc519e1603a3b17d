-- Model assertions (MLSys '20) and learned observation assertions (SIGMOD '22): the catalog, the
-- rows they flag, the counts of each check (BAL's history) and the labels humans give.
CREATE TABLE IF NOT EXISTS sieve.assertions (
    name           text PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('consistency', 'learned')),
    definition     text NOT NULL,              -- the CREATE ASSERTION statement as written
    query          text,                       -- consistency: the SELECT
    relation       text,                       -- learned: the FROM item
    features       jsonb,                      -- learned: [[name, expression], ...]
    per            text,                       -- learned: the grouping expression
    key            jsonb,                      -- learned: key columns
    models         text[] NOT NULL DEFAULT '{}',
    owner          name NOT NULL DEFAULT session_user,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_checked   timestamptz,
    last_count     bigint,
    model_versions jsonb
);

CREATE TABLE IF NOT EXISTS sieve.violations (
    assertion      text NOT NULL REFERENCES sieve.assertions (name) ON DELETE CASCADE,
    key            jsonb NOT NULL,
    severity       double precision NOT NULL,
    model_versions jsonb NOT NULL DEFAULT '{}'::jsonb,
    found_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (assertion, key)
);

CREATE TABLE IF NOT EXISTS sieve.assertion_checks (
    assertion  text NOT NULL REFERENCES sieve.assertions (name) ON DELETE CASCADE,
    checked_at timestamptz NOT NULL DEFAULT now(),
    flagged    bigint NOT NULL,
    labels     bigint NOT NULL,  -- rows in sieve.labels when the check ran
    monitored  boolean NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS sieve.labels (
    key        jsonb NOT NULL,
    label      jsonb,
    labelled_by name NOT NULL DEFAULT session_user,
    labelled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key)
);

-- Everyone may list assertions; their flagged rows, checks and labels are visible to the
-- assertion's owner (a flagged key is data read with the owner's privileges).
GRANT SELECT ON sieve.assertions TO PUBLIC;
ALTER TABLE sieve.violations ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS owner_rows ON sieve.violations;
CREATE POLICY owner_rows ON sieve.violations FOR SELECT USING (
    EXISTS (SELECT 1 FROM sieve.assertions a WHERE a.name = assertion AND pg_catalog.pg_has_role(a.owner, 'MEMBER')));
GRANT SELECT ON sieve.violations TO PUBLIC;
ALTER TABLE sieve.assertion_checks ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS owner_rows ON sieve.assertion_checks;
CREATE POLICY owner_rows ON sieve.assertion_checks FOR SELECT USING (
    EXISTS (SELECT 1 FROM sieve.assertions a WHERE a.name = assertion AND pg_catalog.pg_has_role(a.owner, 'MEMBER')));
GRANT SELECT ON sieve.assertion_checks TO PUBLIC;
-- Everyone sees every label (a labelled row is not proposed again, whoever labelled it); a
-- label is changed or removed only by whoever gave it.
GRANT SELECT, INSERT, UPDATE, DELETE ON sieve.labels TO PUBLIC;
ALTER TABLE sieve.labels ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS read_all ON sieve.labels;
CREATE POLICY read_all ON sieve.labels FOR SELECT USING (true);
DROP POLICY IF EXISTS give_own ON sieve.labels;
CREATE POLICY give_own ON sieve.labels FOR INSERT WITH CHECK (labelled_by = session_user);
DROP POLICY IF EXISTS change_own ON sieve.labels;
CREATE POLICY change_own ON sieve.labels FOR UPDATE USING (labelled_by = session_user);
DROP POLICY IF EXISTS remove_own ON sieve.labels;
CREATE POLICY remove_own ON sieve.labels FOR DELETE USING (labelled_by = session_user);

-- Run through SieveDB (which materializes what the assertion reads); here, a clear error.
CREATE OR REPLACE FUNCTION sieve.check_assertion(name text) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sieve.check_assertion runs through SieveDB, not directly in Postgres'
        USING ERRCODE = '0A000', HINT = 'connect to the SieveDB server and run it as a single SELECT';
END $$;
CREATE OR REPLACE FUNCTION sieve.label_candidates(n integer, strategy text DEFAULT 'bal')
RETURNS TABLE (assertion text, key jsonb, severity double precision)
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sieve.label_candidates runs through SieveDB, not directly in Postgres'
        USING ERRCODE = '0A000', HINT = 'connect to the SieveDB server and run it as a single SELECT';
END $$;
GRANT EXECUTE ON FUNCTION sieve.check_assertion(text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION sieve.label_candidates(integer, text) TO PUBLIC;
