"""Running the assertion statements: CREATE / DROP ASSERTION, ``sieve.check_assertion(name)``,
``sieve.label_candidates(n, strategy)``, and the monitoring that re-evaluates assertions after a
query materialized new outputs of a model they read.

Checking is lazy like any query: the exact planner materializes what the assertion's query reads
(in the client's session, with its privileges), then the flagged rows replace the assertion's
``sieve.violations``. Monitoring never runs a model: it re-reads, as the assertion's owner and
leniently (unmaterialized outputs read NULL), only what is already cached.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import numpy as np
from pglast import ast, parse_sql

from planner.assertions.flags import as_json, consistency_flags, learned_flags, query_of
from planner.assertions.grammar import (
    Consistency,
    Drop,
    Learned,
    catalog_row,
    is_assertion_ddl,
    parse_assertion_ddl,
    parsed_from_row,
)
from planner.install import quote_literal
from planner.materialize import Materialized
from planner.outcome import Done, Forward, Outcome, PlanError, SessionPort
from planner.privileges import require_execute
from planner.rewrite.ast_util import single_select
from planner.rewrite.bind_params import bind_params
from planner.view_access import OwnerPort
from storage import assertions as store

log = logging.getLogger("sievedb.planner.assertions")

DUPLICATE_OBJECT = "42710"
UNDEFINED_OBJECT = "42704"
INSUFFICIENT_PRIVILEGE = "42501"
DATATYPE_MISMATCH = "42804"
INVALID_PARAMETER = "22023"
SYNTAX_ERROR = "42601"
# Another front-end sharing the database may create an assertion: "none exist" is re-read after this.
NONE_TRUSTED_S = 5.0
STRATEGIES = ("bal", "uncertainty", "random")
_NUMERIC = {"int2", "int4", "int8", "float4", "float8", "numeric"}


class Assertions:
    def __init__(self, planner) -> None:
        self.planner = planner
        self._worker: asyncio.Task | None = None  # the monitoring evaluation in flight
        self._pending: set[str] = set()  # models whose new outputs it has yet to look at
        self._none_until = 0.0  # monotonic time until which "no assertion exists" is trusted

    # -- statements ----------------------------------------------------------------------------

    async def run(self, sql: str, port: SessionPort, params: list | None = None) -> Outcome | None:
        """The outcome of an assertion statement, or None when ``sql`` is none; ``params``: the
        bound values of an extended-protocol execution."""
        if is_assertion_ddl(sql):
            parsed = parse_assertion_ddl(sql)
            if isinstance(parsed, Drop):
                return await self._drop(parsed, port)
            return await self._create(parsed, sql, port)
        call = _function_call(sql, params)
        if call is None:
            return None
        name, args = call
        if name == "check_assertion":
            count = await self.check(_text_arg(args, 0, "sieve.check_assertion(name)"), port)
            return Forward(sql=f"SELECT CAST({count} AS bigint) AS check_assertion")
        return await self._label_candidates(args, port)

    async def _create(self, parsed: Consistency | Learned, sql: str, port: SessionPort) -> Outcome:
        if await store.get(self.planner.db, parsed.name) is not None:
            raise PlanError(DUPLICATE_OBJECT, f'assertion "{parsed.name}" already exists')
        query = query_of(parsed)
        columns = await _describe(port, query, parsed)
        # Postgres checks privileges when a query starts, not when it is described: start it
        await port.fetch(f"SELECT * FROM ({query}) AS sieve_q LIMIT 0", (), lenient=True)
        if isinstance(parsed, Consistency) and not [c for c in columns if c.column != "severity"]:
            raise PlanError(
                INVALID_PARAMETER,
                f'assertion "{parsed.name}" has no key column: its columns other than severity '
                "name a flagged row",
            )
        models = self._models_read(query)
        await store.create(self.planner.db, catalog_row(parsed, sql, models, port.user))
        self._none_until = 0.0
        port.notice(f'assertion "{parsed.name}" created over {", ".join(models) or "no model"}')
        return Done("CREATE ASSERTION")

    def catalog_changed(self) -> None:
        """The catalog changed (here or, by LISTEN/NOTIFY, on another front-end): an assertion
        may exist now, so the next monitoring pass reads sieve.assertions again."""
        self._none_until = 0.0

    async def _drop(self, parsed: Drop, port: SessionPort) -> Outcome:
        row = await store.get(self.planner.db, parsed.name)
        if row is None:
            if parsed.if_exists:
                port.notice(f'assertion "{parsed.name}" does not exist, skipping')
                return Done("DROP ASSERTION")
            raise PlanError(UNDEFINED_OBJECT, f'assertion "{parsed.name}" does not exist')
        if not await port.fetchval("SELECT pg_catalog.pg_has_role($1, 'MEMBER')", (row["owner"],)):
            raise PlanError(INSUFFICIENT_PRIVILEGE, f'must be owner of assertion "{parsed.name}"')
        await store.drop(self.planner.db, parsed.name)
        return Done("DROP ASSERTION")

    # -- checking ------------------------------------------------------------------------------

    async def check(self, name: str, port: SessionPort) -> int:
        """Evaluate now (materializing what the assertion reads); the number of flagged rows."""
        row = await store.get(self.planner.db, name)
        if row is None:
            raise PlanError(UNDEFINED_OBJECT, f'assertion "{name}" does not exist')
        query = query_of(parsed_from_row(row))
        rows = await self._materialized_rows(query, port)
        flagged = await asyncio.to_thread(self._flagged, row, rows)  # a density fit is heavy numpy
        await store.replace_violations(self.planner.db, name, flagged, self._versions(row["models"]), False)
        return len(flagged)

    async def _materialized_rows(self, query: str, port: SessionPort) -> list:
        planner = self.planner
        statements = [raw.stmt for raw in parse_sql(query)]
        started = time.monotonic()
        analysis = planner.analyse(statements)
        analysis = await planner.view_access(statements, analysis, port)
        await require_execute(port, planner.specs(analysis.all_sites))
        done = Materialized()
        await planner.materialize_views(analysis, port, done)
        await planner.materialize_all(analysis.sites, port, done)
        await planner.finish(query, done, started, port)
        return await port.fetch(as_json(analysis.forward_sql or query))

    def _flagged(self, row, rows: list) -> list[tuple[dict, float]]:
        objects = [json.loads(r[0]) if isinstance(r[0], str) else r[0] for r in rows]
        if row["kind"] == "consistency":
            return consistency_flags(objects)
        return learned_flags(parsed_from_row(row), objects)

    # -- monitoring ----------------------------------------------------------------------------

    def monitor(self, models_run: set[str], port: SessionPort) -> None:
        """After a query materialized new outputs of ``models_run``: re-evaluate the assertions
        that read them over what is cached, in the background (no model runs)."""
        if not models_run or time.monotonic() < self._none_until:
            return  # no assertion existed a moment ago: skip the catalog read
        # one evaluation at a time: queries arriving meanwhile add their models to the next one
        self._pending |= models_run
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain(port))

    async def _drain(self, port: SessionPort) -> None:
        while self._pending:
            models, self._pending = self._pending, set()
            await self._monitor(models, port)

    async def _monitor(self, models_run: set[str], port: SessionPort) -> None:
        try:
            if not await store.any_exist(self.planner.db):
                self._none_until = time.monotonic() + NONE_TRUSTED_S
                return
            for row in await store.depending_on(self.planner.db, sorted(models_run)):
                query = query_of(parsed_from_row(row))
                async with OwnerPort(self.planner.dbs.read, row["owner"], port) as as_owner:
                    await as_owner.fetch("SELECT pg_catalog.set_config('sieve.lenient', 'on', true)")
                    rows = await as_owner.fetch(as_json(query))
                flagged = await asyncio.to_thread(self._flagged, row, rows)
                versions = self._versions(row["models"])
                await store.replace_violations(self.planner.db, row["name"], flagged, versions, True)
                log.info("monitored assertion=%s flagged=%d models=%s", row["name"], len(flagged), models_run)
        except Exception:  # monitoring must never fail the client's query
            log.warning("assertion monitoring failed", exc_info=True)

    async def settle(self) -> None:
        """Wait for monitoring in flight (tests, shutdown)."""
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)

    # -- what to label next --------------------------------------------------------------------

    async def _label_candidates(self, args: list, port: SessionPort) -> Outcome:
        from sampling import Candidate, choose_labels  # deferred: scipy costs start-up time

        n = _int_arg(args, 0, "sieve.label_candidates(n, strategy)")
        strategy = _text_arg(args, 1, "sieve.label_candidates(n, strategy)") if len(args) > 1 else "bal"
        if strategy not in STRATEGIES:
            raise PlanError(
                INVALID_PARAMETER, f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
            )
        if n < 0:
            raise PlanError(INVALID_PARAMETER, f"n must be >= 0, got {n}")
        flagged = await port.fetch(
            "SELECT v.assertion, v.key::text, v.severity FROM sieve.violations v "
            "WHERE NOT EXISTS (SELECT 1 FROM sieve.labels l WHERE l.key = v.key)"
        )
        # keys as normalised JSON text: hashable, and one row flagged by two assertions is one key
        candidates = [
            Candidate(json.dumps(json.loads(k), sort_keys=True), a, float(s)) for a, k, s in flagged
        ]
        history = await store.history(self.planner.db)
        confidence, all_keys = await self._confidences(port, strategy)

        chosen = choose_labels(
            candidates,
            n,
            strategy,
            history=history,
            confidence=confidence,
            all_keys=all_keys,
            rng=np.random.default_rng(),
        )
        best: dict = {}
        for c in candidates:
            if c.key not in best or c.severity > best[c.key].severity:
                best[c.key] = c
        # a row no assertion flags (uncertainty, random over every row): severity 1 - confidence
        rows = [best.get(k) or Candidate(k, None, 1.0 - (confidence or {}).get(k, 0.0)) for k in chosen]
        return Forward(sql=_candidates_sql(rows))

    async def _confidences(self, port: SessionPort, strategy: str) -> tuple[dict | None, list | None]:
        """(key -> model confidence, every key) from ``sieve.uncertainty_query``, a query of key
        columns and a ``confidence`` column (materialized like a check); unlabelled keys only.
        Needed by 'uncertainty'; 'random' draws from its keys when it is set."""
        query = await port.fetchval("SELECT pg_catalog.current_setting('sieve.uncertainty_query', true)")
        if not query:
            if strategy == "uncertainty":
                raise PlanError(
                    INVALID_PARAMETER,
                    "strategy 'uncertainty' ranks rows by a model's confidence: set sieve.uncertainty_query",
                    hint="SET sieve.uncertainty_query = 'SELECT id, confidence FROM predictions' "
                    "(key columns and a confidence in [0, 1])",
                )
            return None, None
        rows = await self._materialized_rows(query, port)
        labelled = {
            json.dumps(json.loads(k), sort_keys=True)
            for (k,) in await port.fetch("SELECT key::text FROM sieve.labels")
        }
        confidence = {}
        for (text,) in rows:
            obj = json.loads(text) if isinstance(text, str) else text
            if "confidence" not in obj:
                raise PlanError(
                    INVALID_PARAMETER, "sieve.uncertainty_query must return a column named confidence"
                )
            value = obj.pop("confidence")
            key = json.dumps(obj, sort_keys=True)
            if key not in labelled and value is not None:
                confidence[key] = float(value)
        return confidence, list(confidence)

    # -- helpers ---------------------------------------------------------------------------------

    def _models_read(self, query: str) -> list[str]:
        analysis = self.planner.analyse([raw.stmt for raw in parse_sql(query)])
        return sorted({s.model for s in analysis.all_sites})

    def _versions(self, models) -> dict[str, int]:
        out = {}
        for m in models or ():
            spec = self.planner.catalog.get(m)
            if spec is not None:
                out[m] = spec.version
        return out


async def _describe(port: SessionPort, query: str, parsed) -> list:
    """Postgres describes what the assertion reads (in the client's session: its privileges)."""
    if isinstance(parsed, Learned):
        raw = f"SELECT {', '.join(expr for _, expr in parsed.features)} FROM {parsed.relation}"
        for (name, _), column in zip(parsed.features, await _types(port, raw, parsed), strict=True):
            if column.name not in _NUMERIC:
                raise PlanError(
                    DATATYPE_MISMATCH,
                    f'assertion "{parsed.name}": feature {name} is {column.name}, not a number',
                    hint="features are numeric expressions of the relation's columns",
                )
    return await _types(port, query, parsed)


async def _types(port: SessionPort, sql: str, parsed) -> list:
    try:
        return await port.column_types(sql)
    except PlanError as exc:
        raise PlanError(exc.sqlstate, f'assertion "{parsed.name}": {exc}', hint=exc.hint) from None


def _function_call(sql: str, params: list | None) -> tuple[str, list] | None:
    """(sieve function name, its argument nodes) of ``SELECT sieve.check_assertion(...)`` or
    ``SELECT * FROM sieve.label_candidates(...)``; None for anything else."""
    stmt = single_select(sql)
    if stmt is None:
        return None
    stmt = bind_params(stmt, params) if params else stmt
    calls = []
    for target in stmt.targetList or ():
        if isinstance(target.val, ast.FuncCall):
            calls.append(target.val)
    for item in stmt.fromClause or ():
        if isinstance(item, ast.RangeFunction):
            calls += [f for func in item.functions for f in func if isinstance(f, ast.FuncCall)]
    for call in calls:
        names = [n.sval for n in call.funcname]
        if names in (["sieve", "check_assertion"], ["sieve", "label_candidates"]):
            if len(stmt.targetList or ()) > 1 or stmt.whereClause is not None:
                raise PlanError(
                    SYNTAX_ERROR,
                    f"sieve.{names[1]} runs as a statement of its own: SELECT sieve.check_assertion('name') "
                    "or SELECT * FROM sieve.label_candidates(n, 'bal')",
                )
            return names[1], list(call.args or ())
    return None


def _constant(args: list, i: int):
    """The value of argument ``i`` when it is a constant (a bound parameter is one, cast)."""
    node = args[i] if i < len(args) else None
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if isinstance(node, ast.A_Const) and not node.isnull:
        val = node.val
        return val.sval if isinstance(val, ast.String) else getattr(val, "ival", None)
    return None


def _text_arg(args: list, i: int, usage: str) -> str:
    value = _constant(args, i)
    if isinstance(value, str):
        return value
    raise PlanError(INVALID_PARAMETER, f"{usage}: argument {i + 1} must be a string constant")


def _int_arg(args: list, i: int, usage: str) -> int:
    value = _constant(args, i)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PlanError(INVALID_PARAMETER, f"{usage}: argument {i + 1} must be an integer constant") from None


def _candidates_sql(rows) -> str:
    if not rows:
        return "SELECT NULL::text AS assertion, NULL::jsonb AS key, NULL::float8 AS severity WHERE false"
    values = ", ".join(
        "("
        + ", ".join(
            [
                (quote_literal(c.assertion) if c.assertion is not None else "NULL") + "::text",
                quote_literal(c.key) + "::jsonb",
                f"{float(c.severity)!r}::float8",
            ]
        )
        + ")"
        for c in rows
    )
    return f"SELECT * FROM (VALUES {values}) AS t(assertion, key, severity)"
