"""Approximate queries: a trailing clause turns a model predicate into a sampled, guaranteed answer.

Supported shapes (simple query protocol only):

* selection ``SELECT ... FROM <tables> WHERE <model predicate> [AND <plain conjuncts>]
  RECALL TARGET r% | PRECISION TARGET p% | both ... [BUDGET n] USING PROXY <expr>``: candidate
  rows (FROM + plain conjuncts) are keyed by the ``ctid`` of every FROM table; the oracle
  materializes the model for the sampled rows only (cache + inference pool) and evaluates the
  predicate there; the client's statement is then forwarded with the model predicate replaced by
  ``<row key> = ANY(<selected keys>)``.
* aggregates ``SELECT [g,] COUNT(*) | SUM(x) | AVG(x) ... FROM <tables> WHERE <model predicate>
  [GROUP BY g] ERROR TARGET e% ... [USING PROXY <expr>]`` (``g`` and ``x`` model-free): the
  estimates are returned as the planner's own result set.

The sampling operators (``sampling/``) are synchronous; they run in a worker thread and their
oracle hops back onto the event loop for each batch of rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time

import numpy as np
from pglast import ast, keywords, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

from planner.approx import auto_proxy
from planner.approx.clause import ApproxClause, split_clause
from planner.approx.explain import (
    aggregate_actuals,
    bound_words,
    limit_actuals,
    plan_json,
    plan_lines,
    plan_tree,
    selection_actuals,
)
from planner.approx.flatten import flatten_views
from planner.approx.settings import BUDGET_TOO_SMALL, SessionSettings, read_settings
from planner.calls import find_call_sites
from planner.explain import read_explain
from planner.install import digest_sql, quote_ident
from planner.materialize import Materialized, materialize_site
from planner.model_spec import SCALAR_COLUMN
from planner.outcome import Forward, Outcome, PlanError, Rows, SessionPort
from planner.privileges import require_execute
from planner.rewrite.ast_util import conjuncts, mentions_model

log = logging.getLogger("sievedb.planner.approx")

FEATURE_NOT_SUPPORTED = "0A000"
INVALID_PARAMETER = "22023"
SYNTAX_ERROR = "42601"
INTERNAL_ERROR = "XX000"
DEFAULT_BUDGET = 1000
# reserved words name tables only when quoted ("user"); quoting all keywords is always safe
_KEYWORDS = keywords.RESERVED_KEYWORDS | keywords.TYPE_FUNC_NAME_KEYWORDS | keywords.COL_NAME_KEYWORDS
_NUMERIC_TYPES = {"int2", "int4", "int8", "float4", "float8", "numeric", "bool"}  # pg_type names
_AGGREGATES = {"count", "sum", "avg"}
_INTEGRAL = {"pg_catalog.int2", "pg_catalog.int4", "pg_catalog.int8"}


async def run_approximate(
    planner, sql: str, port: SessionPort, rewritable: bool, params: list | None = None
) -> Outcome | None:
    """The outcome of a statement carrying an approximate clause, or (with no clause) of a SELECT
    calling a model while the session sets a target (``SET sieve.recall_target = 0.9``, ...);
    None when the statement is not approximate. ``params``: the bound values of an
    extended-protocol execution; the answer is then SQL with those values in place."""
    body, clause = split_clause(sql)
    if clause is None:
        return await _from_settings(planner, sql, port, params)
    try:
        statements = [raw.stmt for raw in parse_sql(body)]
    except ParseError as exc:
        raise PlanError(SYNTAX_ERROR, f"{exc} (before the approximate clause)") from None
    explain = None
    if len(statements) == 1 and isinstance(statements[0], ast.ExplainStmt):
        request = read_explain(statements[0])
        explain = {"analyze": request.analyze, "as_json": request.json}
        statements = [statements[0].query]
    if len(statements) != 1 or not isinstance(statements[0], ast.SelectStmt):
        raise PlanError(FEATURE_NOT_SUPPORTED, "an approximate clause applies to a single SELECT")
    settings = await read_settings(port)
    stmt = _bound(statements[0], params)
    clause = _flatten(planner, stmt, settings.fill(clause))
    query = ApproxQuery(planner, sql, stmt, clause, port, settings)
    if explain is not None:
        return await query.explain(**explain)
    return await query.run()


def _bound(stmt: ast.SelectStmt, params: list | None) -> ast.SelectStmt:
    if not params:
        return stmt
    from planner.rewrite.bind_params import bind_params

    return bind_params(stmt, params)


async def _from_settings(planner, sql: str, port: SessionPort, params: list | None) -> Outcome | None:
    """Session targets apply to a single SELECT whose WHERE calls a model: row selections take
    sieve.recall_target / precision_target, COUNT/SUM/AVG sieve.error_target. Anything else runs
    exactly."""
    if not getattr(port, "uses_sieve_settings", True):
        return None  # no session targets can be set: skip the parse and the settings read
    try:
        statements = [raw.stmt for raw in parse_sql(sql)]
    except ParseError:
        return None
    if len(statements) != 1 or not isinstance(statements[0], ast.SelectStmt):
        return None
    stmt = statements[0]
    if stmt.op.name != "SETOP_NONE" or not stmt.fromClause:
        return None
    settings = await read_settings(port)
    if not settings.has_target:
        return None
    clause = settings.clause_for(aggregate=_has_aggregate(stmt))
    if clause is None:
        return None
    stmt = _bound(stmt, params)
    clause = _flatten(planner, stmt, clause)
    models = planner.catalog.names
    if stmt.whereClause is None or not any(mentions_model(c, models) for c in conjuncts(stmt.whereClause)):
        return None
    query = ApproxQuery(planner, sql, stmt, clause, port, settings)
    return await query.run()


def _flatten(planner, stmt: ast.SelectStmt, clause: ApproxClause) -> ApproxClause:
    """Merge the model views ``stmt`` reads into it; the proxy expression may name view columns
    too, so it rides along as an extra output column and is rewritten with the rest."""
    views = planner.catalog.views
    if not views:
        return clause
    proxy = None
    if clause.proxy is not None:
        try:
            proxy = parse_sql(f"SELECT ({clause.proxy})")[0].stmt.targetList[0]
        except ParseError:
            proxy = None  # reported, with a hint, where the proxy is used
    if proxy is not None:
        stmt.targetList = (*(stmt.targetList or ()), proxy)
    if not flatten_views(stmt, views):
        if proxy is not None:
            stmt.targetList = stmt.targetList[:-1]
        return clause
    if proxy is None:
        return clause
    rewritten = stmt.targetList[-1]
    stmt.targetList = stmt.targetList[:-1]
    return dataclasses.replace(clause, proxy=RawStream()(rewritten.val))


class ApproxQuery:
    def __init__(
        self, planner, sql: str, stmt: ast.SelectStmt, clause: ApproxClause, port, settings: SessionSettings
    ) -> None:
        self.planner = planner
        self.settings = settings
        self.sql = sql
        self.stmt = stmt
        self.clause = clause
        self.port = port
        self.done = Materialized()
        self.started = time.monotonic()
        self.models = planner.catalog.names
        self.auto = None  # the automatic proxy, when the query names none
        self.known: tuple[int, int] | None = None  # (cached candidate rows, positives among them)
        self.report: dict = {}  # what the operator did, for EXPLAIN ANALYZE

    # -- shape ----------------------------------------------------------------------------------

    def _analyse(self) -> None:
        stmt = self.stmt
        if stmt.op.name != "SETOP_NONE":
            raise PlanError(FEATURE_NOT_SUPPORTED, "approximate clauses do not apply to set operations")
        parts = conjuncts(stmt.whereClause) if stmt.whereClause is not None else []
        model_parts = [c for c in parts if mentions_model(c, self.models)]
        if not model_parts:
            raise PlanError(
                FEATURE_NOT_SUPPORTED,
                "an approximate clause needs a model predicate in WHERE (a condition calling a model "
                "function), and this query has none",
                hint="filter on a model function call, or on a model output column of a view",
            )
        self.predicate = " AND ".join(f"({RawStream()(c)})" for c in model_parts)
        self.free = [RawStream()(c) for c in parts if not mentions_model(c, self.models)]
        self.relations = _relations(stmt.fromClause or ())
        self.from_sql = ", ".join(RawStream()(i) for i in stmt.fromClause)
        if len(self.relations) == 1:
            self.key_sql = f"{self.relations[0]}.ctid::text"
            self.key_type = "tid"
            self.key_col = f"{self.relations[0]}.ctid"
        else:
            self.key_sql = "concat_ws(',', " + ", ".join(f"{r}.ctid::text" for r in self.relations) + ")"
            self.key_type = "text"
            self.key_col = self.key_sql
        probe = parse_sql(f"SELECT 1 FROM {self.from_sql} WHERE {self._where(self.predicate)}")[0].stmt
        sites = find_call_sites([probe], self.models)
        if len({(s.model, s.args) for s in sites}) != 1 or sites[0].depth != 0:
            raise PlanError(
                FEATURE_NOT_SUPPORTED,
                "the model predicate of an approximate query must call exactly one model, once",
            )
        self.site = sites[0]
        self.spec = self.planner.catalog.get(self.site.model)

    def _where(self, *extra: str) -> str:
        parts = [f"({c})" for c in self.free] + [e for e in extra if e]
        return " AND ".join(parts) if parts else "true"

    # -- running ----------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        self._analyse()
        await require_execute(self.port, [self.spec])
        kind = self._kind()
        if kind == "aggregate":
            return await self._aggregate()
        return await (self._selection() if kind == "selection" else self._limit())

    async def explain(self, analyze: bool, as_json: bool) -> Rows:
        """EXPLAIN [ANALYZE]: ANALYZE runs the sampling (calls, NOTICE, query_log) but returns
        the plan instead of rows."""
        self._analyse()
        kind = self._kind()
        mode = _selection_mode(self.clause)[0] if kind == "selection" else kind
        analyzed = None
        if analyze:
            await self.run()
            if kind == "aggregate":
                analyzed = aggregate_actuals(self.report["names"], self.report["results"], self.report)
            elif kind == "limit":
                analyzed = limit_actuals(self.report)
            else:
                analyzed = selection_actuals(self.report.get("result"), self.report, self.auto)
        node = plan_tree(self, mode, analyzed)
        if as_json:
            return Rows(["QUERY PLAN"], [[plan_json(node)]], "EXPLAIN")
        return Rows(["QUERY PLAN"], [[line] for line in plan_lines(node)], "EXPLAIN")

    def _kind(self) -> str:
        """ "selection", "limit" or "aggregate"; a clause that does not fit the query is an error."""
        if self.clause.selection and self.clause.error_target is not None:
            raise PlanError(
                FEATURE_NOT_SUPPORTED,
                "ERROR TARGET (aggregates) cannot be combined with RECALL/PRECISION TARGET (selections)",
            )
        aggregate = _has_aggregate(self.stmt)
        if self.clause.selection:
            if aggregate:
                raise PlanError(
                    FEATURE_NOT_SUPPORTED,
                    "RECALL/PRECISION TARGET select rows; use ERROR TARGET for aggregates",
                )
            return "selection"
        if self.clause.error_target is None:
            if self.stmt.limitCount is not None and not aggregate:
                return "limit"
            raise PlanError(
                FEATURE_NOT_SUPPORTED,
                "this approximate clause names no target: add RECALL, PRECISION or ERROR TARGET "
                "(or LIMIT k before USING PROXY for a proxy-ordered search)",
            )
        if not aggregate:
            raise PlanError(FEATURE_NOT_SUPPORTED, "ERROR TARGET applies to COUNT/SUM/AVG queries")
        return "aggregate"

    async def _rng(self) -> np.random.Generator:
        value = self.settings.seed
        if value in (None, ""):
            return np.random.default_rng()
        try:
            return np.random.default_rng(int(value))
        except ValueError:
            raise PlanError(INVALID_PARAMETER, f"sieve.seed must be an integer, got {value!r}") from None

    def _budget(self) -> int:
        return self.clause.budget if self.clause.budget is not None else DEFAULT_BUDGET

    async def _materialize(self, site) -> None:
        spec = self.planner.catalog.get(site.model)
        await materialize_site(site, spec, self.planner.dbs, self.planner.inference, self.port, self.done)

    async def _fetch(self, sql: str, *args, what: str) -> list:
        """Run in the client's session with lenient reads (unmaterialized outputs read as NULL)."""
        try:
            return await self.port.fetch(sql, args, lenient=True)
        except PlanError as exc:
            raise PlanError(
                exc.sqlstate,
                f"{what}: {exc}",
                detail=exc.detail,
                hint=exc.hint or "approximate queries read FROM tables (and joins of tables), keyed by ctid",
            ) from None

    async def _result_types(self, sql: str, what: str) -> list:
        """Types (``.schema``, ``.name``) of the result columns of ``sql`` (prepared, not run)."""
        try:
            return await self.port.column_types(sql)
        except PlanError as exc:
            raise PlanError(exc.sqlstate, f"{what}: {exc}", detail=exc.detail, hint=exc.hint) from None

    async def _proxy_scores(self, extra_columns: list[str]) -> tuple[list, np.ndarray | None]:
        """Candidate rows: (key, proxy, *extra) and the proxy scores (checked to lie in [0, 1])."""
        proxy = self.clause.proxy
        joined = None  # (site, spec): the proxy's scores come from a join with its model's cache
        if proxy is not None:
            try:
                probe = parse_sql(f"SELECT ({proxy}) FROM {self.from_sql} WHERE {self._where()}")[0].stmt
            except ParseError as exc:
                raise PlanError(
                    SYNTAX_ERROR,
                    f"USING PROXY {proxy}: {exc}",
                    hint="the approximate clause comes after the whole SELECT (after ORDER BY/LIMIT)",
                ) from None
            proxy_sites = find_call_sites([probe], self.models)
            if any(s.model == self.site.model for s in proxy_sites):
                raise PlanError(
                    FEATURE_NOT_SUPPORTED,
                    f"USING PROXY {proxy} calls the oracle model {self.site.model} itself",
                    hint="the proxy must be a column, an expression or a cheaper model",
                )
            await require_execute(self.port, [self.planner.catalog.get(s.model) for s in proxy_sites])
            joined = self._joinable_proxy(probe, proxy_sites)
            if joined is None:
                for site in proxy_sites:  # a cheap model as the proxy: run it exactly, over all candidates
                    await self._materialize(site)
            (kind,) = await self._result_types(
                f"SELECT ({proxy}) FROM {self.from_sql} WHERE {self._where()}", what=f"USING PROXY {proxy}"
            )
            if kind.name not in _NUMERIC_TYPES:
                shown = "text" if kind.name == "unknown" else kind.name
                raise PlanError(INVALID_PARAMETER, f"USING PROXY {proxy} is not numeric (it is {shown})")
        if joined is not None:
            rows = await self._joined_proxy_rows(*joined, extra_columns)
        else:
            proxy_col = f"({proxy})::float8" if proxy is not None else "NULL::float8"
            columns = ", ".join([f"{self.key_sql}", proxy_col, *extra_columns])
            sql = f"SELECT {columns} FROM {self.from_sql} WHERE {self._where()}"
            rows = await self._fetch(sql, what="reading the candidate rows")
        if proxy is None:
            return rows, None
        scores = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
        if scores.size and (np.isnan(scores).any() or scores.min() < 0.0 or scores.max() > 1.0):
            nulls = int(np.isnan(scores).sum())
            finite = scores[~np.isnan(scores)]
            seen = f"from {finite.min():g} to {finite.max():g}" if finite.size else "only NULLs"
            raise PlanError(
                INVALID_PARAMETER,
                f"USING PROXY {proxy} must score every candidate row in [0, 1]; it gives values {seen}"
                + (f" and {nulls} NULLs" if nulls else ""),
            )
        return rows, scores

    def _joinable_proxy(self, probe: ast.SelectStmt, sites) -> tuple | None:
        """(call site, model spec) when the proxy is one call of a model with a single scalar
        output (``USING PROXY cheap_model(x)``): its scores are then read by joining the model's
        cache once, one digest per candidate row, instead of a materialization pass followed by
        the model function row by row. None: the general path."""
        if len(sites) != 1 or sites[0].depth != 0:
            return None
        site, call = sites[0], probe.targetList[0].val
        if not isinstance(call, ast.FuncCall) or [n.sval for n in call.funcname] not in (
            [site.model],
            ["public", site.model],
        ):
            return None
        if tuple(RawStream()(a) for a in call.args or ()) != site.args:
            return None
        if call.agg_order or call.agg_filter is not None or call.agg_within_group or call.agg_distinct:
            return None
        if call.func_variadic or any(isinstance(a, ast.NamedArgExpr) for a in call.args or ()):
            return None
        spec = self.planner.catalog.get(site.model)
        if spec is None or spec.returns_table or spec.row_index or len(spec.bindings) != 1:
            return None
        if len(spec.args) != len(site.args):
            return None
        return site, spec

    async def _joined_proxy_rows(self, site, spec, extra_columns: list[str]) -> list:
        """Candidate rows (key, proxy, *extra, ...) with the proxy read from the model's cache by
        one join; inputs missing from the cache are materialized first (the usual pass, which
        also counts its hits), then the join is read again. Rows come in the order of the
        candidate scan, as from the general path's plain read."""
        digest = digest_sql(spec, list(site.args))
        inner = ", ".join(
            [
                f"{self.key_sql} AS sieve_key",
                *(f"{c} AS sieve_x{j}" for j, c in enumerate(extra_columns)),
                f"{digest} AS sieve_digest",
                "row_number() OVER () AS sieve_n",
            ]
        )
        outer = ", ".join(
            [
                "i.sieve_key",
                f"(c.{quote_ident(SCALAR_COLUMN)})::float8",
                *(f"i.sieve_x{j}" for j in range(len(extra_columns))),
                "i.sieve_digest",
                "c.digest IS NOT NULL",
                "i.sieve_n",
            ]
        )
        sql = (
            f"SELECT {outer} FROM (SELECT {inner} FROM {self.from_sql} WHERE {self._where()} OFFSET 0) AS i "
            f"LEFT JOIN {spec.cache_table} c ON c.digest = i.sieve_digest AND c.ordinal = 0"
        )
        rows = await self._fetch(sql, what="reading the candidate rows")
        hit = len(extra_columns) + 3  # (key, proxy, *extra, digest, hit, ordinal)
        if any(not r[hit] and r[hit - 1] is not None for r in rows):
            await self._materialize(site)
            rows = await self._fetch(sql, what="reading the candidate rows")
        else:  # every input was cached: what a materialization pass would have counted
            self.done.add(spec.name, 0, len({r[hit - 1] for r in rows if r[hit - 1] is not None}))
        order = np.fromiter((r[hit + 1] for r in rows), dtype=np.int64, count=len(rows))
        if order.size > 1 and (np.diff(order) < 0).any():
            rows = [rows[i] for i in np.argsort(order, kind="stable")]
        return rows

    def _oracle(self, keys: list[str], cache: dict[int, bool]):
        """A synchronous oracle (for the sampling thread): candidate positions -> predicate."""
        loop = asyncio.get_running_loop()
        state = {"cancelled": False}

        async def label(idx: np.ndarray) -> np.ndarray:
            wanted = sorted({int(i) for i in idx} - cache.keys())
            if wanted:
                listed = [keys[i] for i in wanted]
                guard = self._guard(listed)  # a TID scan
                restricted = dataclasses.replace(
                    self.site, where_sql=" AND ".join(p for p in (self.site.where_sql, f"({guard})") if p)
                )
                await self._materialize(restricted)
                found = await self._predicate_by_key(guard, "evaluating the model predicate")
                for i in wanted:
                    cache[i] = found.get(keys[i], False)
            return np.array([cache[int(i)] for i in idx], dtype=bool)

        def oracle(idx: np.ndarray) -> np.ndarray:
            if state["cancelled"]:
                raise asyncio.CancelledError()
            return asyncio.run_coroutine_threadsafe(label(np.asarray(idx)), loop).result()

        return oracle, state

    async def _in_thread(self, state: dict, fn, *args, **kwargs):
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise
        except ValueError as exc:  # the operator refused its inputs
            raise PlanError(INVALID_PARAMETER, str(exc)) from None

    # -- selection --------------------------------------------------------------------------------

    async def _selection(self) -> Outcome:
        keys, selected, result = await self._select()
        clause = self.clause
        budget = self._budget()
        calls = self.done.model_calls.get(self.spec.name, 0)
        mode, target = _selection_mode(clause)
        bound = _selection_bound(result, mode) if result is not None else (1.0 if keys else None)
        notice = _selection_notice(clause, result, len(keys), budget, calls, self.auto, len(selected))
        if self.known:
            notice += f"; {_known_words(self.known, result is None)}"
        self.port.notice(notice)
        estimate = None
        if result is not None:
            estimate = result.estimates.get("recall" if mode != "precision" else "precision")
        await self._log(mode, target, estimate, bound, None)
        self.report = {"result": result, "candidates": len(keys), "calls": calls, "known": self.known}
        if result is not None and (not result.target_met or result.budget_hint):
            self._strict(f"BUDGET {budget} is too small for the {mode} target", result.budget_hint)
        return self._forward_rows(selected)

    def _forward_rows(self, keys: list[str]) -> Forward:
        """The client's statement with its model predicate replaced by "one of these rows"; the
        selected rows' model outputs are read leniently (unlabelled ones read as NULL)."""
        guard = self._guard(keys)
        self.stmt.whereClause = parse_sql(f"SELECT 1 WHERE {self._where(guard)}")[0].stmt.whereClause
        return Forward(sql=RawStream()(self.stmt), settings={"sieve.lenient": "on"})

    def _guard(self, keys: list[str]) -> str:
        return f"{self.key_col} = ANY('{_array(keys)}'::{self.key_type}[])"

    async def _select(self) -> tuple[list[str], list[str], object]:
        """Run the selection operator: (candidate keys, selected keys, SelectionResult or None
        when no row needed sampling).

        Candidates whose oracle output is already in the model cache are a stratum known
        exactly: its positives are returned and the operator samples only the other rows, with
        the whole budget. A target met on the sampled rows holds for the union (adding exactly
        known positives can only raise recall, and verified rows cannot lower precision below
        the target), and which rows are cached is fixed before this query draws anything."""
        from sampling import select_cascade, select_precision_target, select_recall_target

        clause = self.clause
        features = await auto_proxy.feature_columns(self) if clause.proxy is None else None
        # A seeded run must not depend on what earlier queries cached: it reproduces exactly
        # (cached outputs are still read, not recomputed, when its sample reaches them).
        rows, scores = await self._proxy_scores(features.sql if features else [])
        keys = [r[0] for r in rows]
        known = await self._cached_labels() if self.settings.seed in (None, "") else {}
        self.known = (len(known), sum(known.values())) if known else None
        rest = [i for i, k in enumerate(keys) if k not in known] if known else list(range(len(keys)))
        selected = [k for k, positive in known.items() if positive]
        if not rest:
            return keys, selected, None
        if known:
            rows = [rows[i] for i in rest]
            scores = scores[rest] if scores is not None else None
        sample_keys = [r[0] for r in rows]
        budget = self._budget()
        rng = await self._rng()
        oracle, state = self._oracle(sample_keys, {})
        if features is not None:
            self.auto, oracle = await self._in_thread(
                state, auto_proxy.train, features, rows, oracle, budget=budget, rng=rng
            )
            scores = self.auto.proxy.scores
        common = {"budget": budget, "rng": rng, "confidence": clause.confidence, "bound": self.settings.bound}
        if clause.recall_target is not None and clause.precision_target is not None:
            fn = select_cascade
            kw = {"recall_target": clause.recall_target, "precision_target": clause.precision_target}
        elif clause.recall_target is not None:
            fn, kw = select_recall_target, {"target": clause.recall_target}
        else:
            fn, kw = select_precision_target, {"target": clause.precision_target}
        result = await self._in_thread(state, fn, scores, oracle, **kw, **common)
        selected += [sample_keys[int(i)] for i in result.indices]
        return keys, selected, result

    async def _cached_labels(self) -> dict[str, bool]:
        """Predicate values of the candidate rows whose oracle output is cached (free labels).
        An empty cache costs one probe; otherwise one lenient read of the candidates."""
        if await self.planner.db.fetchval(f"SELECT NOT EXISTS (SELECT 1 FROM {self.spec.cache_table})"):
            return {}
        spec = self.spec
        if not spec.returns_table and len(spec.args) == len(self.site.args):
            # the model function is not NULL exactly where its cache holds a value: find those rows
            # with one semi-join, and evaluate the predicate (the function) for them only
            cached = (
                f"{digest_sql(spec, list(self.site.args))} IN (SELECT c.digest FROM {spec.cache_table} c "
                f"WHERE c.ordinal = 0 AND c.{quote_ident(SCALAR_COLUMN)} IS NOT NULL)"
            )
        else:
            cached = f"({self.site.model}({', '.join(self.site.args)})) IS NOT NULL"
        return await self._predicate_by_key(f"({cached})", "reading cached oracle outputs")

    async def _predicate_by_key(self, condition: str, what: str) -> dict[str, bool]:
        """The model predicate of the candidate rows meeting ``condition``, by row key (a row of
        a join is positive when any of its combinations is)."""
        rows = await self._fetch(
            f"SELECT {self.key_sql}, coalesce(({self.predicate})::bool, false) FROM {self.from_sql} "
            f"WHERE {self._where(condition)}",
            what=what,
        )
        found: dict[str, bool] = {}
        for key, value in rows:
            found[key] = found.get(key, False) or bool(value)
        return found

    def _strict(self, message: str, detail: str | None) -> None:
        """Under SET sieve.strict = on, a target the budget cannot meet is an error (the NOTICE
        already went out; the query_log row records what was spent)."""
        if self.settings.strict:
            raise PlanError(
                BUDGET_TOO_SMALL,
                f"{message} (sieve.strict is on)" + (f": {detail}" if detail else ""),
                hint="raise BUDGET (or sieve.budget), or SET sieve.strict = off for the answer and a NOTICE",
            )

    # -- proxy-ordered LIMIT ----------------------------------------------------------------------

    async def _limit(self) -> Outcome:
        """``... WHERE <model predicate> LIMIT k USING PROXY expr``: label candidates in
        descending proxy order until k rows satisfy the predicate; only verified rows return."""
        from sampling import limit_search

        stmt = self.stmt
        if stmt.sortClause:
            raise PlanError(
                FEATURE_NOT_SUPPORTED,
                "a proxy-ordered LIMIT returns the first matching rows in proxy order, so it cannot "
                "honour ORDER BY",
                hint="drop USING PROXY for an exact ORDER BY ... LIMIT",
            )
        if stmt.distinctClause or getattr(stmt.limitOption, "name", "") == "LIMIT_OPTION_WITH_TIES":
            raise PlanError(FEATURE_NOT_SUPPORTED, "a proxy-ordered LIMIT supports no DISTINCT or WITH TIES")
        k = _constant_count(stmt.limitCount, "LIMIT")
        if stmt.limitOffset is not None:
            k += _constant_count(stmt.limitOffset, "OFFSET")
        rows, scores = await self._proxy_scores([])
        keys = [r[0] for r in rows]
        budget = self.clause.budget
        rng = await self._rng()
        cache: dict[int, bool] = {}
        oracle, state = self._oracle(keys, cache)
        result = None
        selected: list[str] = []
        if keys and k > 0:
            if scores is None:  # no proxy: a random order
                scores = np.zeros(len(keys))
            batch = max(16, min(256, k))
            result = await self._in_thread(
                state, limit_search, scores, oracle, k=k, rng=rng, budget=budget, batch_size=batch
            )
            selected = [keys[int(i)] for i in result.indices]
        calls = self.done.model_calls.get(self.spec.name, 0)
        self.port.notice(_limit_notice(self.clause, result, k, len(keys), calls))
        self.report = {"candidates": len(keys), "calls": calls, "limit": result}
        await self._log("limit", None, float(len(selected)), None, None, confidence=None)
        if result is not None and result.budget_hint:
            self._strict(f"BUDGET {budget} ran out before LIMIT {k} rows were found", result.budget_hint)
        return self._forward_rows(selected)

    # -- aggregates -------------------------------------------------------------------------------

    async def _aggregate(self) -> Outcome:
        from sampling import estimate_aggregate

        stmt = self.stmt
        if stmt.havingClause is not None or stmt.windowClause or stmt.distinctClause:
            raise PlanError(FEATURE_NOT_SUPPORTED, "ERROR TARGET queries support no HAVING/DISTINCT/windows")
        groups = [RawStream()(g) for g in stmt.groupClause or ()]
        if len(groups) > 1:
            raise PlanError(FEATURE_NOT_SUPPORTED, "ERROR TARGET queries support one GROUP BY expression")
        group = groups[0] if groups else None
        if group is not None and _mentions_text(group, self.models):
            raise PlanError(FEATURE_NOT_SUPPORTED, "GROUP BY a model output is not supported yet")
        outputs = []  # (column name, "group" | agg, value expression or None)
        for target in stmt.targetList:
            name, kind, expr = _output(target, group)
            if expr is not None and _mentions_text(expr, self.models):
                raise PlanError(FEATURE_NOT_SUPPORTED, f"{kind.upper()} of a model output: not supported yet")
            outputs.append((name, kind, expr))
        aggs = [o for o in outputs if o[1] in _AGGREGATES]
        extra = [f"({group})::text" if group is not None else "NULL::text"]
        extra += [f"({expr})::float8" if expr else "1::float8" for _, _, expr in aggs]
        rows, scores = await self._proxy_scores(extra)
        keys = [r[0] for r in rows]
        self.report["candidates"] = len(keys)
        group_of = np.array(["\\N" if r[2] is None else r[2] for r in rows], dtype=object)
        budget = self._budget()
        rng = await self._rng()
        cache: dict[int, bool] = {}
        oracle, state = self._oracle(keys, cache)
        share = max(1, budget // len(aggs))
        results = []
        for j, (_, kind, expr) in enumerate(aggs):
            values = np.array([np.nan if r[3 + j] is None else r[3 + j] for r in rows], dtype=np.float64)
            local = np.flatnonzero(~np.isnan(values)) if expr else np.arange(len(rows))
            results.append(
                await self._estimate(
                    estimate_aggregate,
                    kind,
                    local,
                    values,
                    group_of,
                    scores,
                    oracle,
                    state,
                    share,
                    rng,
                    group,
                )
            )
        return await self._aggregate_rows(outputs, aggs, results, budget)

    async def _estimate(
        self, estimate_aggregate, kind, local, values, group_of, scores, oracle, state, budget, rng, group
    ):
        if local.size == 0:
            return None
        lvals = values[local] if kind != "count" else np.ones(local.size)
        lgroups = group_of[local]

        def local_oracle(idx):
            idx = np.asarray(idx, dtype=np.int64)
            matches = oracle(local[idx])
            if group is None:
                return matches, lvals[idx]
            return matches, lvals[idx], lgroups[idx]

        kwargs = {
            "agg": kind,
            "error_target": self.clause.error_target,
            "budget": budget,
            "rng": rng,
            "confidence": self.clause.confidence,
            "proxy": scores[local] if scores is not None else None,
            "group_keys": sorted(set(lgroups.tolist())) if group is not None else None,
            # aggregates offer betting (finite-sample; also what "empirical" maps to) and normal
            "bound": self.settings.bound if self.settings.bound in ("empirical", "normal") else "betting",
        }
        if kind != "count":
            lo, hi = float(lvals.min()), float(lvals.max())
            # SUM's draws are match * value, so 0 is in their range; AVG averages values only
            kwargs["value_bounds"] = (lo, hi) if kind == "avg" else (min(lo, 0.0), max(hi, 0.0))
        return await self._in_thread(state, estimate_aggregate, local.size, local_oracle, **kwargs)

    async def _aggregate_rows(self, outputs, aggs, results, budget) -> Forward:
        """The estimates as SQL for Postgres to return, typed as the query without its clause
        would be (so binary results and client type mapping match an exact answer)."""
        bounds = self.settings.bounds
        keys: list = [None]
        if any(o[1] == "group" for o in outputs) or self.stmt.groupClause:
            keys = sorted({k for r in results if r is not None for k in r.groups})
        types = [
            _type_sql(t) for t in await self._result_types(RawStream()(self.stmt), "typing the estimates")
        ]
        columns: list[tuple[str, str]] = []  # (name, SQL type)
        for (name, kind, _), type_name in zip(outputs, types, strict=True):
            columns.append((name, type_name))
            if bounds and kind in _AGGREGATES:
                columns += [(f"{name}_ci_low", "float8"), (f"{name}_ci_high", "float8")]
        table = []
        for key in keys:
            line: list[str | None] = []
            j = 0
            for (_, kind, _), type_name in zip(outputs, types, strict=True):
                if kind == "group":
                    line.append(None if key == "\\N" else key)
                    continue
                result = results[j]
                j += 1
                est = result.groups.get(key) if result is not None else None
                if est is None:
                    cells = [0.0, 0.0, 0.0] if kind != "avg" else [None, None, None]
                else:
                    cells = [est.estimate, est.ci_low, est.ci_high]
                line.append(_num(cells[0], integral=type_name in _INTEGRAL))
                if bounds:
                    line += [_num(c) for c in cells[1:]]
            table.append(line)
        calls = self.done.model_calls.get(self.spec.name, 0)
        first = results[0] if results else None
        for (name, kind, _), result in zip(aggs, results, strict=True):
            self.port.notice(
                _aggregate_notice(name, kind, result, self.clause, budget, calls, self.report["candidates"])
            )
        await self._log(
            f"approx_{aggs[0][1]}",
            self.clause.error_target,
            first.estimate if first is not None else None,
            first.ci_low if first is not None else None,
            first.ci_high if first is not None else None,
        )
        self.report.update(names=[a[0] for a in aggs], results=results, calls=calls)
        missed = [r for r in results if r is not None and not r.target_met]
        if missed:
            needed = max((r.budget_needed or 0) for r in missed)
            self._strict(
                f"BUDGET {budget} is too small for ERROR TARGET {_pct(self.clause.error_target)}",
                _budget_words(needed, self.report["candidates"]),
            )
        return Forward(sql=_values_sql(columns, table))

    # -- reporting --------------------------------------------------------------------------------

    async def _log(
        self, mode: str, target, estimate, ci_low, ci_high, confidence: float | None = -1.0
    ) -> None:
        self.done.model_calls.setdefault(self.spec.name, 0)
        await self.planner.db.execute(
            "INSERT INTO sieve.query_log (query, mode, model_calls, cache_hits, elapsed_ms, target, "
            "confidence, estimate, ci_low, ci_high, role) "
            "VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, $11)",
            self.sql,
            mode,
            json.dumps(self.done.model_calls),
            self.done.cache_hits,
            1000 * (time.monotonic() - self.started),
            _finite(target),
            self.clause.confidence if confidence == -1.0 else confidence,
            _finite(estimate),
            _finite(ci_low),
            _finite(ci_high),
            self.port.user,
        )


def _relations(items) -> list[str]:
    """SQL names (alias or table) of every table in FROM; anything else is not supported."""
    out: list[str] = []
    for item in items:
        if isinstance(item, ast.JoinExpr):
            out += _relations([item.larg, item.rarg])
        elif isinstance(item, ast.RangeVar):
            if item.alias is not None:
                out.append(_ident(item.alias.aliasname))
            else:
                out.append(".".join(_ident(p) for p in (item.schemaname, item.relname) if p))
        else:
            raise PlanError(
                FEATURE_NOT_SUPPORTED,
                "approximate queries read FROM tables, joins of tables and simple model views only "
                "(no subqueries or set-returning functions)",
            )
    if not out:
        raise PlanError(FEATURE_NOT_SUPPORTED, "an approximate query needs a FROM clause")
    return out


def _ident(name: str) -> str:
    plain = name.islower() and name.replace("_", "").isalnum() and not name[0].isdigit()
    if plain and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def _array(values: list[str]) -> str:
    """A text[] literal body (the values hold no quotes or backslashes: ctids)."""
    return "{" + ",".join(f'"{v}"' for v in values) + "}"


def _has_aggregate(stmt: ast.SelectStmt) -> bool:
    from planner.rewrite.ast_util import has_aggregates

    return bool(stmt.groupClause) or has_aggregates(stmt.targetList or ())


def _mentions_text(expr: str, models: set[str]) -> bool:
    return mentions_model(parse_sql(f"SELECT {expr}")[0].stmt, models)


def _output(target: ast.ResTarget, group: str | None) -> tuple[str, str, str | None]:
    val = target.val
    text = RawStream()(val)
    if group is not None and text == group:
        name = target.name or (val.fields[-1].sval if isinstance(val, ast.ColumnRef) else "?column?")
        return name, "group", None
    if isinstance(val, ast.FuncCall) and len(val.funcname) == 1:
        fname = val.funcname[0].sval.lower()
        if fname in _AGGREGATES and not val.agg_distinct and val.agg_filter is None:
            if fname == "count" and val.agg_star:
                return target.name or "count", "count", None
            if fname != "count" and val.args and len(val.args) == 1:
                return target.name or fname, fname, RawStream()(val.args[0])
    raise PlanError(
        FEATURE_NOT_SUPPORTED,
        f"ERROR TARGET queries may select COUNT(*), SUM(x), AVG(x) and the GROUP BY expression, not {text}",
    )


def _constant_count(node, what: str) -> int:
    """The value of a LIMIT/OFFSET that is a non-negative integer constant."""
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer) and node.val.ival >= 0:
        return int(node.val.ival)
    if isinstance(node, ast.A_Const) and node.isnull:
        raise PlanError(FEATURE_NOT_SUPPORTED, f"a proxy-ordered LIMIT needs a count ({what} ALL/NULL given)")
    raise PlanError(
        FEATURE_NOT_SUPPORTED, f"a proxy-ordered LIMIT needs {what} to be a non-negative integer constant"
    )


def _limit_notice(clause: ApproxClause, result, k: int, candidates: int, calls: int) -> str:
    order = f"proxy {clause.proxy}" if clause.proxy is not None else "random order (no proxy)"
    head = f"proxy-ordered LIMIT {k} by {order}"
    if result is None:
        return f"{head}: 0 oracle calls ({candidates} candidate rows)"
    text = (
        f"{head}: {result.found} verified rows found; {result.oracle_calls} of {candidates} candidate rows "
        f"labelled ({calls} model calls)"
    )
    if clause.budget is not None:
        text += f" of budget {clause.budget}"
    if result.exhausted:
        text += f"; only {result.found} rows found"
        text += f" ({result.budget_hint})" if result.budget_hint else " (every candidate row was checked)"
    return text


def _known_words(known: tuple[int, int], everything: bool) -> str:
    rows, positives = known
    text = f"{rows} candidate rows had cached oracle outputs ({positives} positive), used as free labels"
    return text + ("; every candidate was cached: the answer is exact" if everything else "")


def _selection_mode(clause: ApproxClause) -> tuple[str, float]:
    if clause.recall_target is not None and clause.precision_target is not None:
        return "cascade", clause.recall_target
    if clause.recall_target is not None:
        return "recall", clause.recall_target
    return "precision", clause.precision_target


def _selection_bound(result, mode: str) -> float | None:
    if result is None:
        return None
    key = "precision_lower_bound" if mode == "precision" else "recall_lower_bound"
    return result.achieved_bound.get(key)


def _selection_notice(
    clause: ApproxClause, result, candidates: int, budget: int, calls: int, auto=None, returned=None
) -> str:
    targets = []
    if clause.recall_target is not None:
        targets.append(f"recall target {_pct(clause.recall_target)}")
    if clause.precision_target is not None:
        targets.append(f"precision target {_pct(clause.precision_target)}")
    head = f"approximate selection: {' and '.join(targets)} at confidence {_pct(clause.confidence)}"
    if result is None:
        rows = f"{candidates} candidate rows" if candidates else "no candidate rows"
        return f"{head}: {rows}, 0 oracle calls"
    text = (
        f"{head}: {result.size if returned is None else returned} of {candidates} rows returned; "
        f"{result.oracle_calls} oracle rows labelled "
        f"({calls} model calls) of budget {budget}"
    )
    achieved = ", ".join(f"{k.replace('_', ' ')} {v:.3g}" for k, v in result.achieved_bound.items())
    if achieved:
        text += f"; certified {achieved}"
    text += f"; {bound_words(result.bound, result.finite_sample)}"
    if auto is not None:
        text += f"; {auto.describe()}"
    if not result.target_met:
        text += "; TARGET NOT MET"
    if result.budget_hint:
        text += f" ({result.budget_hint})"
    return text


def _budget_words(needed: int | None, candidates: int) -> str | None:
    """What budget would meet a missed target; labelling every candidate row is exact."""
    if not needed:
        return None
    if needed >= candidates:
        return f"only labelling every one of the {candidates} candidate rows (an exact scan) would meet it"
    return f"a budget of about {needed} would meet it"


def _aggregate_notice(
    name: str, kind: str, result, clause: ApproxClause, budget: int, calls: int, candidates: int
) -> str:
    target, confidence = _pct(clause.error_target), _pct(clause.confidence)
    head = f"approximate {kind.upper()} ({name}): error target {target} at confidence {confidence}"
    if result is None:
        return f"{head}: no candidate rows"
    if math.isnan(result.estimate):
        spans = "; ".join(
            f"{g}: {e.estimate:.6g} [{e.ci_low:.6g}, {e.ci_high:.6g}]"
            for g, e in sorted(result.groups.items())
        )
        text = f"{head}: per group {spans}"
    else:
        text = f"{head}: estimate {result.estimate:.6g}, interval [{result.ci_low:.6g}, {result.ci_high:.6g}]"
    text += f"; {result.oracle_calls} oracle rows labelled ({calls} model calls in all) of budget {budget}"
    if not result.target_met:
        text += "; TARGET NOT MET"
        words = _budget_words(result.budget_needed, candidates)
        if words:
            text += f" ({words})"
    return text


def _pct(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def _num(value, integral: bool = False) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(round(float(value))) if integral else repr(float(value))


def _type_sql(pg_type) -> str:
    return f"{_ident(pg_type.schema)}.{_ident(pg_type.name)}"


def _values_sql(columns: list[tuple[str, str]], table: list[list[str | None]]) -> str:
    """``SELECT`` of literal rows with the given column names and types (no rows: WHERE false)."""

    def select(line: list[str | None]) -> str:
        cells = []
        for (name, type_name), value in zip(columns, line, strict=True):
            literal = "NULL" if value is None else "'" + value.replace("'", "''") + "'"
            cells.append(f"CAST({literal} AS {type_name}) AS {quote_ident(name)}")
        return "SELECT " + ", ".join(cells)

    if not table:
        return select([None] * len(columns)) + " WHERE false"
    return " UNION ALL ".join(select(line) for line in table)


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
