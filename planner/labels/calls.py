"""Labelling from SQL, routed through the planner like ``sieve.check_assertion`` (Postgres
prepares and describes the placeholder functions of migration 0012; each execution comes here):

- ``SELECT sieve.label('f', 'photos', 42, true)``: label the input of row 42 of photos — the
  pending request with that provenance, else the row read in the client's session (its
  privileges) with the function's arguments taken from the columns of the same names;
- ``SELECT sieve.unlabel('f', 'photos', 42)``: take back one's own last label of it;
- ``SELECT sieve.labelling_link('f')`` / ``SELECT sieve.status_link()``: links to the web face.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pglast import ast

from planner.install import quote_ident, quote_literal
from planner.labels import giving, store, versions
from planner.labels.definition import choice_text
from planner.labels.errors import LabelError
from planner.labels.requests import SOURCE_SQL
from planner.labels.statement import current_sql
from planner.model_spec import ModelSpec
from planner.outcome import Forward, Outcome, PlanError, SessionPort
from planner.privileges import require_execute
from planner.rewrite.ast_util import single_select
from planner.rewrite.bind_params import bind_params
from planner.send_forms import digests_of, send_sql
from planner.sqlstate import (
    FEATURE_NOT_SUPPORTED,
    INVALID_PARAMETER,
    OBJECT_NOT_IN_PREREQUISITE_STATE,
    SYNTAX_ERROR,
    UNDEFINED_FUNCTION,
)

if TYPE_CHECKING:
    from planner.planner import Planner

log = logging.getLogger("sievedb.planner.labels")

FUNCTIONS = ("label", "unlabel", "labelling_link", "status_link")
UNDEFINED_TABLE = "42P01"
INVALID_COLUMN_REFERENCE = "42P10"
NO_DATA_FOUND = "P0002"
WRONG_OBJECT_TYPE = "42809"
NULL_VALUE = "22004"
_LINK_TTL = (
    "SELECT pg_catalog.date_part('epoch', coalesce(nullif(pg_catalog.current_setting("
    "'sieve.labelling_link_ttl', true), ''), '7 days')::pg_catalog.interval)::pg_catalog.float8"
)


class LabelCalls:
    def __init__(self, planner: Planner) -> None:
        self.planner = planner

    async def run(self, sql: str, port: SessionPort, params: list | None = None) -> Outcome | None:
        """The outcome of a labelling call; None when ``sql`` is none."""
        call = _function_call(sql, params)
        if call is None:
            return None
        name, args = call
        try:
            if name == "label":
                text = await self._label(port, *_args(args, 4, "sieve.label(function, table, key, value)"))
            elif name == "unlabel":
                text = await self._unlabel(port, *_args(args, 3, "sieve.unlabel(function, table, key)"))
            elif name == "labelling_link":
                (function,) = _args(args, 1, "sieve.labelling_link(function)")
                text = await self._link(port, "label", function)
            else:
                _args(args, 0, "sieve.status_link()")
                text = await self._link(port, "status", None)
        except LabelError as exc:
            raise exc.plan_error() from None
        return Forward(sql=f"SELECT CAST({quote_literal(text)} AS text) AS {quote_ident(name)}")

    # -- sieve.label / sieve.unlabel -----------------------------------------------------------

    async def _label(self, port: SessionPort, function, table, key, value) -> str:
        if value is None:
            raise PlanError(
                NULL_VALUE, "sieve.label: the label must not be NULL", hint="sieve.unlabel takes one back"
            )
        spec = await self._spec(port, function)
        role = await _role(port)
        request = await self._request_of(port, spec, table, key)
        given, bumped = await giving.give(
            self.planner.dbs.write, int(spec.id), request.request_id, value, role, relabel=True
        )
        await versions.follow(self.planner, bumped, port)
        where = f"{table} {key}"
        if not given.changed:
            return (
                f"unchanged: {where} is already labelled {choice_text(given.value)} (version {given.version})"
            )
        if given.previous is not None:
            return (
                f"relabelled {where}: {choice_text(given.previous)} -> {choice_text(given.value)} "
                f"(version {given.version})"
            )
        return f"labelled {where}: {choice_text(given.value)} (version {given.version})"

    async def _unlabel(self, port: SessionPort, function, table, key) -> str:
        spec = await self._spec(port, function)
        role = await _role(port)
        request = await self._request_of(port, spec, table, key)
        bumped = await giving.take_back(self.planner.dbs.write, int(spec.id), request.request_id, role)
        await versions.follow(self.planner, bumped, port)
        return f"unlabelled {table} {key}" + (f" (version {bumped.version})" if bumped else "")

    async def _request_of(self, port: SessionPort, spec: ModelSpec, table, key) -> store.Request:
        """The request for the input of ``table``'s row ``key``: the one filed with that
        provenance, else one filed now from the row (read in the client's session)."""
        if table is None or key is None:
            raise PlanError(INVALID_PARAMETER, "sieve.label: table and key must not be NULL")
        oid, table_sql, column = await _table(port, table)
        db = self.planner.dbs.read
        found = await store.request_by_source(db, int(spec.id), oid, key)
        if found is not None:
            rows = await port.fetch(f"SELECT 1 FROM {table_sql} t WHERE t.{quote_ident(column)} = $1", (key,))
            if not rows:
                raise PlanError(NO_DATA_FOUND, f"row {key} of {table} no longer exists: no label written")
            return found
        wanted = await _read_row(port, spec, oid, table_sql, column, key, table)
        existing = await store.request_by_digest(db, int(spec.id), wanted.digest)
        if existing is not None:
            return existing
        async with self.planner.dbs.write.acquire() as conn:
            await store.file_requests(
                conn, int(spec.id), spec.cache_table, [wanted], port.user, current_sql()
            )
        return await store.request_by_digest(db, int(spec.id), wanted.digest)

    # -- links ---------------------------------------------------------------------------------

    async def _link(self, port: SessionPort, scope: str, function) -> str:
        base = getattr(self.planner, "http_base_url", None)
        if base is None:
            raise PlanError(
                OBJECT_NOT_IN_PREREQUISITE_STATE,
                "the labelling and status pages are not served",
                hint="start sievedb serve with --http-port",
            )
        if scope == "label":
            spec = await self._spec(port, function)
            function = spec.name
        ttl = await port.fetchval(_LINK_TTL)
        token = await self.planner.labels.issue(await _role(port), function, scope, int(ttl or 0))
        page = "label" if scope == "label" else "status"
        return f"{base.rstrip('/')}/{page}?token={token}"

    # -- helpers -------------------------------------------------------------------------------

    async def _spec(self, port: SessionPort, function) -> ModelSpec:
        if not isinstance(function, str):
            raise PlanError(INVALID_PARAMETER, "the function is named by a string constant")
        spec = self.planner.catalog.get(function)
        if spec is None:
            await self.planner.catalog.reload()  # another front-end may have made it
            spec = self.planner.catalog.get(function)
        if spec is None:
            raise PlanError(UNDEFINED_FUNCTION, f"labels function {function} does not exist")
        if not spec.is_labels:
            raise PlanError(
                WRONG_OBJECT_TYPE,
                f"function {function} is a model, not a labels function",
                hint="CREATE FUNCTION ... LANGUAGE labels makes one",
            )
        await require_execute(port, [spec])
        return spec


async def _role(port: SessionPort) -> str:
    return await port.fetchval("SELECT current_user::text")


async def _table(port: SessionPort, table: str) -> tuple[int, str, str]:
    """(oid, qualified name, primary key column) of a table named as the client's session sees it."""
    exists = await port.fetchval("SELECT pg_catalog.to_regclass($1)::pg_catalog.oid::int8", (table,))
    if exists is None:
        raise PlanError(UNDEFINED_TABLE, f'relation "{table}" does not exist')
    rows = await port.fetch(SOURCE_SQL, (table,))
    if not rows:
        raise PlanError(
            INVALID_COLUMN_REFERENCE,
            f'relation "{table}" has no one-column primary key: sieve.label names a row by it',
            hint="label the request through the labelling page (SELECT sieve.labelling_link('f'))",
        )
    oid, table_sql, column = rows[0]
    return int(oid), table_sql, column


async def _read_row(
    port: SessionPort, spec: ModelSpec, oid: int, table_sql: str, column: str, key: str, table: str
):
    """The row's input to the function: its columns named like the function's arguments."""
    sends = [send_sql(t, f"(t.{quote_ident(n)})::{t.sql}") for n, t in spec.args]
    shown = [f"(t.{quote_ident(n)})::text" if t.base != "bytea" else "NULL::text" for n, t in spec.args]
    sql = f"SELECT {', '.join([*sends, *shown])} FROM {table_sql} t WHERE t.{quote_ident(column)} = $1"
    try:
        rows = await port.fetch(sql, (key,))
    except PlanError as exc:
        if exc.sqlstate != "42703":
            raise
        names = ", ".join(n for n, _ in spec.args)
        raise PlanError(
            INVALID_COLUMN_REFERENCE,
            f"sieve.label: {table} has no columns named like the arguments of {spec.name} ({names}): {exc}",
            hint="label its pending requests instead (SELECT * FROM sieve.label_requests), or through "
            f"the labelling page (SELECT sieve.labelling_link('{spec.name}'))",
        ) from None
    if not rows:
        raise PlanError(NO_DATA_FOUND, f"no row of {table} has key {key}: no label written")
    row, width = rows[0], len(spec.args)
    if any(v is None for v in row[:width]):
        raise PlanError(INVALID_PARAMETER, f"row {key} of {table} has a NULL argument of {spec.name}")
    raw = [bytes(v) for v in row[:width]]
    digest = digests_of([[r] for r in raw])[0]
    return store.NewRequest(
        digest,
        [n for n, _ in spec.args],
        [t.sql for _, t in spec.args],
        list(row[width:]),
        [r if t.base == "bytea" else None for r, (_, t) in zip(raw, spec.args, strict=True)],
        oid,
        table_sql,
        key,
    )


def _function_call(sql: str, params: list | None) -> tuple[str, list] | None:
    """(name, argument nodes) of ``SELECT sieve.<labelling function>(...)``; None otherwise."""
    stmt = single_select(sql)
    if stmt is None:
        return None
    stmt = bind_params(stmt, params) if params else stmt
    for target in stmt.targetList or ():
        call = target.val
        if not isinstance(call, ast.FuncCall):
            continue
        names = [n.sval for n in call.funcname]
        if len(names) == 2 and names[0] == "sieve" and names[1] in FUNCTIONS:
            if len(stmt.targetList) > 1 or stmt.whereClause is not None or stmt.fromClause:
                raise PlanError(
                    SYNTAX_ERROR,
                    f"sieve.{names[1]} runs as a statement of its own, e.g. SELECT sieve.{names[1]}(...)",
                )
            return names[1], list(call.args or ())
    return None


def _args(args: list, count: int, usage: str) -> list:
    if len(args) != count:
        raise PlanError(FEATURE_NOT_SUPPORTED if len(args) > count else INVALID_PARAMETER, f"usage: {usage}")
    return [_constant(a, usage) for a in args]


def _constant(node, usage: str):
    """A constant argument as text (what Postgres casts to the function's types); None for NULL."""
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if not isinstance(node, ast.A_Const):
        raise PlanError(INVALID_PARAMETER, f"{usage}: arguments must be constants")
    if node.isnull:
        return None
    val = node.val
    if isinstance(val, ast.Boolean):
        return "true" if val.boolval else "false"
    if isinstance(val, ast.Integer):
        return str(val.ival)
    if isinstance(val, ast.Float):
        return val.fval
    return val.sval
