"""Row maps: a model's cached outputs keyed by row identity, so that reading them back is a join
on the row's tid instead of digesting every input again (planner.read_outputs reads them).

A map belongs to one model version, one table and the argument columns a call reads:
``sieve_cache.m<id>_v<n>_r<table oid>_c<attnums>``, rows (filenode, tid, xid, ordinal, outputs).
An entry holds for the tuple version at ``tid`` whose xmin is ``xid`` while the table keeps the
relfilenode ``filenode``: a tuple version's values never change, xmin tells apart the versions
that lived at one tid (VACUUM FREEZE keeps the raw xmin), and a rewrite (VACUUM FULL, CLUSTER,
TRUNCATE, ALTER TABLE ... TYPE) gives the table a new relfilenode. A row without a valid entry
reads through the model's SQL function, as every row did before maps.

Trust: the identities and send forms come from the client's session, as every input does, so a
map is only kept for what that session cannot misreport: arguments that are plain columns (of
the model's argument types: no cast, no virtual generated column) of a plain table without
row-level security or children, named by its schema in the input query, every row's tableoid
checked; SieveDB digests the send forms itself and copies the outputs from the cache under that
digest. A map is readable by the roles that may execute the model and select those columns, and
by nobody once the table has row-level security (its rows then read through the function).
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass

import asyncpg
from pglast import ast, parse_sql
from pglast.parser import ParseError

from planner.calls import CallSite
from planner.install import quote_ident, quote_literal, signature_sql
from planner.model_spec import ModelSpec
from planner.outcome import SessionPort

log = logging.getLogger("sievedb.planner.row_maps")

DDL_LOCK = 0x5133_7EDD  # advisory lock (with the model id): one session creates a model's maps


@dataclass(frozen=True)
class MapKey:
    """What a map serves: calls of ``model`` on these columns of this relation (as written)."""

    model: str
    relation: tuple[str, ...]  # (schema, name) or (name,)
    columns: tuple[str, ...]


@dataclass(frozen=True)
class RowMap:
    key: MapKey
    table: str  # sieve_cache.m<id>_v<n>_r<oid>_c<attnums>
    relid: int
    columns: tuple[str, ...]  # the model's result columns, as in its cache table
    table_columns: tuple[str, ...] = ()  # the table's own columns (names a join must not reuse)


# -- which calls a map can serve ------------------------------------------------------------------


def call_key(model: str, args: list[ast.Node], relation: ast.RangeVar) -> MapKey | None:
    """The key of a call whose arguments are all columns of ``relation`` (its level's only FROM
    item), or None."""
    if relation.catalogname or relation.alias is not None and relation.alias.colnames:
        return None  # renamed columns (t AS a(c1, c2)) are not the names the catalog knows
    names = {relation.alias.aliasname if relation.alias is not None else relation.relname}
    columns = []
    for arg in args:
        if not isinstance(arg, ast.ColumnRef) or not all(isinstance(f, ast.String) for f in arg.fields):
            return None
        fields = [f.sval for f in arg.fields]
        if len(fields) == 2 and fields[0] in names or len(fields) == 1:
            columns.append(fields[-1])
        else:
            return None
    if not columns:
        return None
    schema = (relation.schemaname,) if relation.schemaname else ()
    return MapKey(model, (*schema, relation.relname), tuple(columns))


def site_key(site: CallSite) -> tuple[MapKey, ast.RangeVar] | None:
    """A call site's map key, when it reads one table by plain columns."""
    if site.row_key is None or not site.from_sql or not site.args:
        return None
    return _site_key(site.model, site.from_sql, site.args)


@functools.lru_cache(maxsize=1024)
def _site_key(model: str, from_sql: str, args: tuple[str, ...]) -> tuple[MapKey, ast.RangeVar] | None:
    try:
        item = parse_sql(f"SELECT 1 FROM {from_sql}")[0].stmt.fromClause
        targets = parse_sql(f"SELECT {', '.join(args)}")[0].stmt.targetList
    except ParseError:
        return None
    if len(item) != 1 or not isinstance(item[0], ast.RangeVar):
        return None
    key = call_key(model, [t.val for t in targets], item[0])
    return None if key is None else (key, item[0])


# -- setting a map up ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MapTarget:
    """A verified map for one call site's input query."""

    rowmap: RowMap
    schema: str  # the table's schema and name in the catalog: the input query names it so
    name: str
    alias: str
    attnums: tuple[int, ...]
    exists: bool = False  # the map table existed when the call was verified


async def verify(port: SessionPort, spec: ModelSpec, key: MapKey, relation: ast.RangeVar) -> MapTarget | None:
    """Check, in the client's session, that the call reads plain columns of a plain table (see
    the module's docstring); the map's target, or None when the call does not qualify."""
    if spec.returns_table or len(key.columns) != len(spec.args):
        return None
    names = ", ".join(quote_literal(c) for c in key.columns)
    types = ", ".join(quote_literal(_type_name(t)) for _, t in spec.args)
    prefix = spec.cache_table.split(".")[1]
    sql = _VERIFY.format(names=names, types=types, prefix=quote_literal(prefix))
    rows = await port.fetch(sql, (_relation_text(key.relation),))
    if not rows or not rows[0][1] or len(rows[0][4] or ()) != len(key.columns):
        return None
    relid, _, schema, name, attnums, names, exists = rows[0]
    alias = relation.alias.aliasname if relation.alias is not None else relation.relname
    suffix = "_".join(str(a) for a in attnums)
    table = f"{spec.cache_table}_r{int(relid)}_c{suffix}"
    columns = tuple(json.loads(names or "[]"))
    rowmap = RowMap(key, table, int(relid), tuple(b.column for b in spec.bindings), columns)
    return MapTarget(rowmap, schema, name, alias, tuple(attnums), bool(exists))


_VERIFY = (
    "SELECT c.oid::pg_catalog.int8, c.relkind = 'r' AND c.relpersistence <> 't' "
    "AND NOT c.relrowsecurity AND NOT c.relhassubclass, n.nspname::pg_catalog.text, "
    "c.relname::pg_catalog.text, v.attnums, "
    "pg_catalog.to_json(ARRAY(SELECT a.attname FROM pg_catalog.pg_attribute a "
    "WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped))::pg_catalog.text, "
    # whether the map exists already (its name follows from the oid and the attnums)
    "EXISTS (SELECT 1 FROM pg_catalog.pg_class m JOIN pg_catalog.pg_namespace s "
    "ON s.oid = m.relnamespace WHERE s.nspname = 'sieve_cache' AND m.relname = "
    "pg_catalog.format('%s_r%s_c%s', {prefix}, c.oid, pg_catalog.array_to_string(v.attnums, '_'))) "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "CROSS JOIN LATERAL (SELECT ARRAY(SELECT a.attnum::pg_catalog.int4 "
    "FROM ROWS FROM (pg_catalog.unnest(ARRAY[{names}]::pg_catalog.text[]), "
    "pg_catalog.unnest(ARRAY[{types}]::pg_catalog.text[])) WITH ORDINALITY AS w(name, type, k) "
    "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid "
    "AND a.attname = w.name AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> 'v' "
    "AND a.atttypid = pg_catalog.to_regtype(w.type) ORDER BY w.k) AS attnums) AS v "
    "WHERE c.oid = pg_catalog.to_regclass($1)"
)


def _relation_text(relation: tuple[str, ...]) -> str:
    return ".".join(quote_ident(part) for part in relation)


def _type_name(sql_type) -> str:
    """The argument type, schema-qualified: a session's search_path cannot shadow it."""
    return f"pg_catalog.{sql_type.base}" + ("[]" if sql_type.is_array else "")


async def ensure_table(db: asyncpg.Pool, spec: ModelSpec, target: MapTarget) -> None:
    """Create the map (SieveDB's, like the cache) and its read policy, unless verify saw it."""
    if target.exists:
        return
    table = target.rowmap.table
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_catalog.pg_advisory_xact_lock($1, $2)", DDL_LOCK, int(spec.id))
        if not await conn.fetchval(_EXISTS, table.split(".")[1]):  # or made while this one waited
            function = await conn.fetchval(
                "SELECT pg_catalog.to_regprocedure($1)::pg_catalog.oid", signature_sql(spec, with_names=False)
            )
            for statement in _ddl(spec, target, int(function)):
                await conn.execute(statement)
            log.info("row map created table=%s model=%s relation=%s", table, spec.key, target.rowmap.relid)


# pg_class itself, read with the statement's snapshot (a name lookup may use a catalog cache
# that has not yet seen the table another session made while this one waited for the lock)
_EXISTS = (
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
    "ON n.oid = c.relnamespace WHERE n.nspname = 'sieve_cache' AND c.relname = $1)"
)


def _ddl(spec: ModelSpec, target: MapTarget, function: int) -> list[str]:
    table, relid = target.rowmap.table, target.rowmap.relid
    columns = ", ".join(f"{quote_ident(b.column)} {b.sql_type.sql}" for b in spec.bindings)
    may_read = " AND ".join(
        [
            f"pg_catalog.has_function_privilege({function}::pg_catalog.oid, 'EXECUTE')",
            *(
                f"pg_catalog.has_column_privilege({relid}::pg_catalog.oid, {a}::pg_catalog.int2, 'SELECT')"
                for a in target.attnums
            ),
            f"NOT COALESCE((SELECT c.relrowsecurity FROM pg_catalog.pg_class c WHERE c.oid = {relid}), true)",
        ]
    )
    return [
        f"CREATE UNLOGGED TABLE {table} (filenode pg_catalog.oid NOT NULL, tid pg_catalog.tid NOT NULL, "
        f"xid pg_catalog.xid NOT NULL, ordinal integer NOT NULL, {columns}, "
        "PRIMARY KEY (tid, filenode, ordinal))",
        f"GRANT SELECT ON {table} TO PUBLIC",
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        # One subquery: Postgres checks the privileges once per query (an InitPlan), not per row.
        f"CREATE POLICY sieve_readers ON {table} FOR SELECT USING ((SELECT {may_read}))",
    ]


# -- reading entries -------------------------------------------------------------------


def filenode_sql(relid: int) -> str:
    """The table's relfilenode now (once per query): entries of another one are not valid."""
    return f"(SELECT pg_catalog.pg_relation_filenode({int(relid)}::pg_catalog.oid))"


def match_sql(map_alias: str, table_alias: str, relid: int) -> str:
    """The join condition of a map entry and the tuple version it belongs to."""
    m, t = quote_ident(map_alias), quote_ident(table_alias)
    return (
        f"{m}.tid = {t}.ctid AND {m}.xid = {t}.xmin AND {m}.filenode = {filenode_sql(relid)} "
        f"AND {m}.ordinal = 0"
    )
