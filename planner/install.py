"""The Postgres side of a model function: its cache table and the SQL function that reads it.

The installed function has the model's own signature, so psql ``\\df``, views and BI tools see a
real function; its body looks the input's digest up in the cache table of the model version.
"""

from __future__ import annotations

from planner.model_spec import SCALAR_COLUMN, ModelSpec, cache_table_name

BODY_TAG = "$sieve$"
OWN_COMMENT = "SieveDB model "  # how the comment SieveDB writes on a model function starts
FUNCTION_COST = 10000


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def digest_sql(spec: ModelSpec, arg_exprs: list[str]) -> str:
    """Content address of one input (bytea): SHA-256 over the binary send form of each argument.
    Collision resistant: inputs an attacker made to share an MD5 never share a cached output."""
    parts = [t.digest_bytes(f"({e})::{t.sql}") for (_, t), e in zip(spec.args, arg_exprs, strict=True)]
    if len(parts) == 1:
        return f"sha256({parts[0]})"
    framed = " || ".join(f"int4send(octet_length({p})) || {p}" for p in parts)
    return f"sha256({framed})"


def digests_literal(digests: list[bytes]) -> str:
    """A bytea[] literal of digests, spelled in hex (safe whatever standard_conforming_strings)."""
    listed = ",".join(bytes(d).hex() for d in digests)
    return f"ARRAY(SELECT decode(h, 'hex') FROM unnest('{{{listed}}}'::text[]) AS h)"


def signature_sql(spec: ModelSpec, with_names: bool = True) -> str:
    if with_names:
        args = ", ".join(f"{quote_ident(n)} {t.sql}" for n, t in spec.args)
    else:
        args = ", ".join(t.sql for _, t in spec.args)
    return f"public.{quote_ident(spec.name)}({args})"


def cache_table_sql(spec: ModelSpec) -> str:
    columns = ", ".join(f"{quote_ident(b.column)} {b.sql_type.sql}" for b in spec.bindings)
    return (
        f"CREATE TABLE IF NOT EXISTS {spec.cache_table} (digest bytea NOT NULL, "
        f"ordinal integer NOT NULL DEFAULT 0, {columns}, PRIMARY KEY (digest, ordinal))"
    )


def function_sql(spec: ModelSpec, or_replace: bool = False) -> str:
    params = [f"${i + 1}" for i in range(len(spec.args))]
    digest = digest_sql(spec, params)
    missing = f"sieve.not_materialized({quote_literal(spec.name)}, {spec.version})"
    if spec.returns_table:
        cols = ", ".join(f"c.{quote_ident(b.column)}" for b in spec.bindings)
        nulls = ", ".join(f"NULL::{b.sql_type.sql}" for b in spec.bindings)
        returns = (
            "TABLE (" + ", ".join(f"{quote_ident(b.column)} {b.sql_type.sql}" for b in spec.bindings) + ")"
        )
        body = (
            f"SELECT {cols} FROM {spec.cache_table} c WHERE c.digest = {digest} AND c.ordinal >= 0 "
            f"UNION ALL SELECT {nulls} FROM (SELECT {missing}) m WHERE NOT EXISTS "
            f"(SELECT 1 FROM {spec.cache_table} c WHERE c.digest = {digest})"
        )
    else:
        sql_type = spec.bindings[0].sql_type.sql
        returns = sql_type
        body = (
            f"SELECT coalesce((SELECT c.{SCALAR_COLUMN} FROM {spec.cache_table} c "
            f"WHERE c.digest = {digest} AND c.ordinal = 0), {missing}::{sql_type})"
        )
    create = "CREATE OR REPLACE FUNCTION" if or_replace else "CREATE FUNCTION"
    return (
        f"{create} {signature_sql(spec)} RETURNS {returns} LANGUAGE sql STABLE STRICT "
        # A high cost makes Postgres test every cheaper qual first, so the function only sees
        # rows that the materialized input set (cheap conjuncts pushed down) covers.
        f"PARALLEL SAFE COST {FUNCTION_COST} AS {BODY_TAG} {body} {BODY_TAG}"
    )


def body_mark(spec: ModelSpec) -> str:
    """Text only the body of this model version's function holds (``FROM <cache table> c``): it
    finds the function again after a rename, wherever its name went."""
    return f"FROM {spec.cache_table} c "


def install_sql(spec: ModelSpec, previous: ModelSpec | None, comment: bool = True) -> str:
    """Everything CREATE [OR REPLACE] FUNCTION … LANGUAGE onnx does in Postgres, as one script.
    ``comment=False`` keeps the function's comment (a user's own, see ``is_own_comment``)."""
    row = spec.to_row()
    steps = []
    # Same argument and result types: replace in place, so views over the function survive.
    in_place = replaces_in_place(previous, spec)
    if previous is not None and not in_place:
        steps.append(f"DROP FUNCTION IF EXISTS {signature_sql(previous, with_names=False)}")
    steps += [cache_table_sql(spec), function_sql(spec, or_replace=in_place)]
    if comment or not in_place:
        steps.append(comment_sql(spec))
    steps.append(
        "INSERT INTO sieve.models (id, name, path, content_hash, version, signature, options) VALUES ("
        + f"{int(spec.id)}, "
        + ", ".join(quote_literal(str(row[k])) for k in ("name", "path", "content_hash"))
        + f", {spec.version}, {quote_literal(row['signature'])}::jsonb, "
        f"{quote_literal(row['options'])}::jsonb) "
        "ON CONFLICT (name) DO UPDATE SET path = EXCLUDED.path, content_hash = EXCLUDED.content_hash, "
        "version = EXCLUDED.version, signature = EXCLUDED.signature, options = EXCLUDED.options, "
        "updated_at = now()"
    )
    steps.append(label_function_sql(spec))
    return ";\n".join(steps)


def label_function_sql(spec: ModelSpec) -> str:
    """Who may see a labels function's requests is who may execute its SQL function (by OID,
    which a new version in place keeps; planner/labels). Other models have no such row."""
    if not spec.is_labels:
        return f"DELETE FROM sieve.label_functions WHERE model_id = {int(spec.id)}"
    signature = quote_literal(signature_sql(spec, with_names=False))
    return (
        f"INSERT INTO sieve.label_functions (model_id, function_oid) VALUES ({int(spec.id)}, "
        f"{signature}::pg_catalog.regprocedure::pg_catalog.oid) "
        "ON CONFLICT (model_id) DO UPDATE SET function_oid = EXCLUDED.function_oid"
    )


def replaces_in_place(previous: ModelSpec | None, spec: ModelSpec) -> bool:
    """A new version with the same argument and result types replaces the function in place
    (CREATE OR REPLACE keeps its OID, owner, grants and the views over it)."""
    return previous is not None and _shape(previous) == _shape(spec)


def comment_sql(spec: ModelSpec) -> str:
    return f"COMMENT ON FUNCTION {signature_sql(spec, with_names=False)} IS " + quote_literal(
        f"{OWN_COMMENT}{spec.name} v{spec.version}: {spec.path}"
    )


def is_own_comment(comment: str | None) -> bool:
    """COMMENT ON FUNCTION is the user's: SieveDB rewrites a function's comment (new version,
    rename) only while it is the one SieveDB wrote, or there is none."""
    return comment is None or comment.startswith(OWN_COMMENT)


def rename_sql(renamed: ModelSpec) -> list[str]:
    """Follow a rename Postgres made (``renamed``: the model under its new name): the catalog
    row, and the function body, which names the model in its 'not materialized' error. Caches
    are named by the model id: they stay as they are."""
    return [
        f"UPDATE sieve.models SET name = {quote_literal(renamed.name)}, updated_at = now() "
        f"WHERE id = {int(renamed.id)}",
        function_sql(renamed, or_replace=True),
    ]


def grant_sql(spec: ModelSpec, owner: str) -> list[str]:
    """Privileges of an installed model: the registering role owns the function (and so may
    GRANT or REVOKE EXECUTE); the cache table stays SieveDB's, readable only by roles that may
    execute the function (row-level security keyed on the function's OID, which needs no
    dependency: a rename keeps it, a new function gets a new policy)."""
    signature = signature_sql(spec, with_names=False)
    table = spec.cache_table
    policy = (
        f"CREATE POLICY sieve_executors ON {table} FOR SELECT "
        "USING (pg_catalog.has_function_privilege(%s::pg_catalog.oid, 'EXECUTE'))"
    )
    return [
        f"ALTER FUNCTION {signature} OWNER TO {quote_ident(owner)}",
        f"GRANT SELECT ON {table} TO PUBLIC",
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS sieve_executors ON {table}",
        f"DO {BODY_TAG} BEGIN EXECUTE pg_catalog.format({quote_literal(policy)}, "
        f"{quote_literal(signature)}::pg_catalog.regprocedure::pg_catalog.oid); END {BODY_TAG}",
    ]


def _shape(spec: ModelSpec) -> tuple:
    return (
        [t for _, t in spec.args],
        spec.returns_table,
        [(b.column, b.sql_type) for b in spec.bindings],
    )


def drop_sql(spec: ModelSpec, function: bool = True) -> str:
    """Drop the model; ``function=False`` leaves its SQL function to a DROP already run."""
    tables = [f"DROP TABLE IF EXISTS {cache_table_name(spec.id, v)}" for v in range(1, spec.version + 1)]
    drop_function = [f"DROP FUNCTION {signature_sql(spec, with_names=False)}"] if function else []
    return ";\n".join(
        [
            *drop_function,
            *tables,
            drop_maps_sql(spec.id),
            f"DELETE FROM sieve.models WHERE name = {quote_literal(spec.name)}",
        ]
    )


def drop_maps_sql(model_id: int) -> str:
    """Drop every row map of a model, all versions (with its cache tables, when the model goes:
    sieve.clear_cache empties them, migration 0008)."""
    pattern = quote_literal(f"^m{int(model_id)}_v[0-9]+_r[0-9]+_c[0-9_]+$")
    return (
        "DO $sieve$ DECLARE t record; BEGIN FOR t IN SELECT c.relname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'sieve_cache' "
        f"AND c.relkind = 'r' AND c.relname ~ {pattern} LOOP "
        "EXECUTE pg_catalog.format('DROP TABLE sieve_cache.%I', t.relname); END LOOP; END $sieve$"
    )
