"""Every Postgres round trip of an approximate query: candidate units and their proxy scores,
materializing models for sampled units, reading what the statement computes for them, the
model cache's free labels, and the query_log row. SQL derived from the client's statement runs in
the client's session (its role); only the fixed query_log insert runs on SieveDB's connection."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
from pglast import ast, parse_sql
from pglast.parser import ParseError

from planner.approx.plan import ApproxPlan
from planner.calls import CallSite, find_call_sites
from planner.install import digest_sql, quote_ident
from planner.materialize import Materialized, materialize_site
from planner.model_spec import SCALAR_COLUMN
from planner.outcome import PlanError, SessionPort
from planner.privileges import require_execute
from planner.rewrite.ast_util import render
from planner.sqlstate import FEATURE_NOT_SUPPORTED, INVALID_PARAMETER, SYNTAX_ERROR

_JSONB = frozenset({"model_calls", "groups", "trace"})  # query_log columns sent as JSON text
_NUMERIC_TYPES = {"int2", "int4", "int8", "float4", "float8", "numeric", "bool"}  # pg_type names


@dataclass
class Candidates:
    """Candidate units in scan order: their keys, proxy scores (None: no proxy) and the extra
    columns asked for (one list per column)."""

    keys: list[str]
    scores: np.ndarray | None
    extra: list[list]


class UnitLabels:
    """The oracle the selection operators call: candidate positions -> the model predicate,
    each unit labelled once (``known`` holds what was labelled, by position)."""

    def __init__(self, io: ApproxIO, keys: list[str]) -> None:
        self.io, self.keys = io, keys
        self.known: dict[int, bool] = {}

    async def __call__(self, idx: np.ndarray) -> np.ndarray:
        wanted = sorted({int(i) for i in idx} - self.known.keys())
        if wanted:
            labels = await self.io.label_units([self.keys[i] for i in wanted])
            for i in wanted:
                self.known[i] = labels.get(self.keys[i], False)
        return np.array([self.known[int(i)] for i in idx], dtype=bool)


class ApproxIO:
    def __init__(self, planner, port: SessionPort, plan: ApproxPlan, done: Materialized) -> None:
        self.planner = planner
        self.port = port
        self.plan = plan
        self.done = done

    # -- plumbing ------------------------------------------------------------------------------

    async def fetch(self, sql: str, what: str, lenient: bool = True) -> list:
        """Rows of ``sql`` in the client's session (lenient: unmaterialized outputs read NULL)."""
        try:
            return await self.port.fetch(sql, (), lenient=lenient)
        except PlanError as exc:
            raise PlanError(exc.sqlstate, f"{what}: {exc}", detail=exc.detail, hint=exc.hint) from None

    async def result_types(self, sql: str, what: str) -> list:
        """Types (``.schema``, ``.name``) of the result columns of ``sql`` (prepared, not run)."""
        try:
            return await self.port.column_types(sql)
        except PlanError as exc:
            raise PlanError(exc.sqlstate, f"{what}: {exc}", detail=exc.detail, hint=exc.hint) from None

    async def materialize(self, site: CallSite) -> None:
        spec = self.planner.catalog.get(site.model)
        await materialize_site(site, spec, self.planner.dbs, self.planner.inference, self.port, self.done)

    async def materialize_for(self, sql: str) -> None:
        """Run every model ``sql`` reads, over the inputs it reaches (the exact planner's sites:
        chained models in order, conditions on the base tables pushed into their inputs)."""
        analysis = self.planner.analyse([parse_sql(sql)[0].stmt])
        await self.planner.materialize_all(analysis.sites, self.port, self.done)

    # -- candidates ----------------------------------------------------------------------------

    async def candidates(self, proxy: str | None, extra: list[str]) -> Candidates:
        """Candidate units (base rows meeting the model-free conjuncts), with proxy scores checked
        to lie in [0, 1] and ``extra`` columns."""
        plan = self.plan
        joined = None
        if proxy is not None:
            joined = await self._check_proxy(proxy)
        if joined is not None:
            rows = await self._joined_proxy_rows(*joined, extra)
        else:
            proxy_col = f"({proxy})::float8" if proxy is not None else "NULL::float8"
            columns = ", ".join([plan.key_sql, proxy_col, *extra])
            rows = await self.fetch(
                f"SELECT {columns} FROM {plan.unit_from} WHERE {plan.where()}", "reading the candidate rows"
            )
        keys = [r[0] for r in rows]
        columns = [[r[2 + j] for r in rows] for j in range(len(extra))]
        if proxy is None:
            return Candidates(keys, None, columns)
        scores = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
        _check_scores(proxy, scores)
        return Candidates(keys, scores, columns)

    async def _check_proxy(self, proxy: str) -> tuple | None:
        """Refuse a proxy that is not SQL over the base tables, calls the oracle or is not numeric;
        run a cheap model proxy. (site, spec) when its scores can be read by one cache join."""
        plan = self.plan
        probe_sql = f"SELECT ({proxy}) FROM {plan.unit_from} WHERE {plan.where()}"
        try:
            probe = parse_sql(probe_sql)[0].stmt
        except ParseError as exc:
            raise PlanError(
                SYNTAX_ERROR,
                f"USING PROXY {proxy}: {exc}",
                hint="the approximate clause comes after the whole SELECT (after ORDER BY/LIMIT)",
            ) from None
        models = self.planner.catalog.names
        sites = find_call_sites([probe], models)
        if any(s.model in plan.models for s in sites):
            raise PlanError(
                FEATURE_NOT_SUPPORTED,
                f"USING PROXY {proxy} calls the oracle model {plan.model} itself",
                hint="the proxy must be a column, an expression or a cheaper model",
            )
        await require_execute(self.port, [self.planner.catalog.get(s.model) for s in sites])
        joined = self._joinable_proxy(probe, sites)
        if joined is None:
            for site in sites:  # a cheap model as the proxy: run it exactly, over all candidates
                await self.materialize(site)
        (kind,) = await self.result_types(probe_sql, what=f"USING PROXY {proxy}")
        if kind.name not in _NUMERIC_TYPES:
            shown = "text" if kind.name == "unknown" else kind.name
            raise PlanError(INVALID_PARAMETER, f"USING PROXY {proxy} is not numeric (it is {shown})")
        return joined

    def _joinable_proxy(self, probe: ast.SelectStmt, sites) -> tuple | None:
        """(call site, model spec) when the proxy is one call of a model with a single scalar
        output: its scores are then read by joining the model's cache once, instead of a
        materialization pass followed by the model function row by row."""
        if len(sites) != 1 or sites[0].depth != 0:
            return None
        site, call = sites[0], probe.targetList[0].val
        if not isinstance(call, ast.FuncCall) or [n.sval for n in call.funcname] not in (
            [site.model],
            ["public", site.model],
        ):
            return None
        if tuple(render(a) for a in call.args or ()) != site.args:
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

    async def _joined_proxy_rows(self, site, spec, extra: list[str]) -> list:
        """Rows (key, proxy, *extra) with the proxy read from the model's cache by one join;
        inputs missing from the cache are materialized first, then the join is read again."""
        plan = self.plan
        digest = digest_sql(spec, list(site.args))
        inner = ", ".join(
            [
                f"{plan.key_sql} AS sieve_key",
                *(f"{c} AS sieve_x{j}" for j, c in enumerate(extra)),
                f"{digest} AS sieve_digest",
                "row_number() OVER () AS sieve_n",
            ]
        )
        outer = ", ".join(
            [
                "i.sieve_key",
                f"(c.{quote_ident(SCALAR_COLUMN)})::float8",
                *(f"i.sieve_x{j}" for j in range(len(extra))),
                "i.sieve_digest",
                "c.digest IS NOT NULL",
                "i.sieve_n",
            ]
        )
        sql = (
            f"SELECT {outer} FROM (SELECT {inner} FROM {plan.unit_from} WHERE {plan.where()} OFFSET 0) AS i "
            f"LEFT JOIN {spec.cache_table} c ON c.digest = i.sieve_digest AND c.ordinal = 0"
        )
        rows = await self.fetch(sql, "reading the candidate rows")
        hit = len(extra) + 3  # (key, proxy, *extra, digest, hit, ordinal)
        if any(not r[hit] and r[hit - 1] is not None for r in rows):
            await self.materialize(site)
            rows = await self.fetch(sql, "reading the candidate rows")
        else:  # every input was cached: what a materialization pass would have counted
            self.done.add(spec.name, 0, len({r[hit - 1] for r in rows if r[hit - 1] is not None}))
        order = np.fromiter((r[hit + 1] for r in rows), dtype=np.int64, count=len(rows))
        if order.size > 1 and (np.diff(order) < 0).any():
            rows = [rows[i] for i in np.argsort(order, kind="stable")]
        return rows

    # -- labels --------------------------------------------------------------------------------

    async def label_units(self, keys: list[str]) -> dict[str, bool]:
        """The model predicate of the given units (materializing the oracle for them only)."""
        plan = self.plan
        guard = plan.guard(keys)
        site = replace(plan.site, where_sql=" AND ".join(p for p in (plan.site.where_sql, f"({guard})") if p))
        await self.materialize(site)
        return await self.predicate_by_key(guard, "evaluating the model predicate")

    async def predicate_by_key(self, condition: str, what: str) -> dict[str, bool]:
        """The model predicate of the candidate units meeting ``condition``, by key (a unit of a
        join is positive when any of its combinations is)."""
        plan = self.plan
        rows = await self.fetch(
            f"SELECT {plan.key_sql}, coalesce(({plan.predicate})::bool, false) FROM {plan.from_sql} "
            f"WHERE {plan.where(condition)}",
            what,
        )
        found: dict[str, bool] = {}
        for key, value in rows:
            found[key] = found.get(key, False) or bool(value)
        return found

    async def cached_labels(self) -> dict[str, bool]:
        """Predicate values of the candidate units whose oracle output is cached (free labels).
        An empty cache costs one probe; otherwise one lenient read of the candidates."""
        plan = self.plan
        spec = self.planner.catalog.get(plan.site.model)
        if await self.planner.db.fetchval(f"SELECT NOT EXISTS (SELECT 1 FROM {spec.cache_table})"):
            return {}
        if not spec.returns_table and len(spec.args) == len(plan.site.args):
            cached = (
                f"{digest_sql(spec, list(plan.site.args))} IN (SELECT c.digest FROM {spec.cache_table} c "
                f"WHERE c.ordinal = 0 AND c.{quote_ident(SCALAR_COLUMN)} IS NOT NULL)"
            )
        else:
            cached = f"({plan.site.model}({', '.join(plan.site.args)})) IS NOT NULL"
        return await self.predicate_by_key(f"({cached})", "reading cached oracle outputs")

    async def unit_lines(self, keys: list[str]) -> list[tuple]:
        """What the aggregate statement computes for each of the given units: one line per
        (unit, group) with rows, ``(key, *group values, count_j, sum_j for each aggregate)``.
        Every model the statement reads runs first, over these units' inputs only."""
        sql = unit_lines_sql(self.plan, self.plan.guard(keys))
        await self.materialize_for(sql)
        return await self.fetch(sql, "computing the sampled units", lenient=False)

    async def value_ranges(self) -> list[tuple[float, float] | None]:
        """Per aggregate, the range of its argument over the candidates when the argument reads
        no model (known before sampling, so its interval can be finite-sample); else None."""
        plan = self.plan
        known = [a for a in plan.aggregates if a.value is not None and not a.reads_model]
        if not known:
            return [None] * len(plan.aggregates)
        columns = ", ".join(f"min(({a.value})::float8), max(({a.value})::float8)" for a in known)
        (row,) = await self.fetch(
            f"SELECT {columns} FROM {plan.unit_from} WHERE {plan.where()}", "reading the value ranges"
        )
        ranges = iter(zip(row[::2], row[1::2], strict=True))
        out: list[tuple[float, float] | None] = []
        for agg in plan.aggregates:
            if agg.value is None or agg.reads_model:
                out.append(None)
                continue
            lo, hi = next(ranges)
            out.append((float(lo), float(hi)) if lo is not None else (0.0, 0.0))
        return out

    # -- the log -------------------------------------------------------------------------------

    async def log(self, row: dict) -> None:
        """One sieve.query_log row (columns by name; see report.log_row)."""
        names = list(row)
        placeholders = ", ".join(
            f"${i + 1}::jsonb" if n in _JSONB else f"${i + 1}" for i, n in enumerate(names)
        )
        values = [json.dumps(row[n]) if n in _JSONB else row[n] for n in names]
        await self.planner.db.execute(
            f"INSERT INTO sieve.query_log ({', '.join(names)}) VALUES ({placeholders})", *values
        )
        self.planner.observer.query_logged(row["mode"], row["model_calls"], row["cache_hits"])


def unit_lines_sql(plan: ApproxPlan, guard: str) -> str:
    """Per (unit, group): for each aggregate the rows it counts and the sum of its argument."""
    groups = [f"({g})::text" for g in plan.groups]
    measures = []
    for agg in plan.aggregates:
        if agg.value is None:
            measures += ["count(*)::float8", "0::float8"]
        else:
            measures += [f"count({agg.value})::float8", f"coalesce(sum(({agg.value})::float8), 0)"]
    keys = ", ".join(str(i + 1) for i in range(1 + len(groups)))
    return (
        f"SELECT {', '.join([plan.key_sql, *groups, *measures])} FROM {plan.from_sql} "
        f"WHERE {plan.where(*[f'({c})' for c in plan.modelled], guard)} GROUP BY {keys}"
    )


def _check_scores(proxy: str, scores: np.ndarray) -> None:
    if scores.size and (np.isnan(scores).any() or scores.min() < 0.0 or scores.max() > 1.0):
        nulls = int(np.isnan(scores).sum())
        finite = scores[~np.isnan(scores)]
        seen = f"from {finite.min():g} to {finite.max():g}" if finite.size else "only NULLs"
        raise PlanError(
            INVALID_PARAMETER,
            f"USING PROXY {proxy} must score every candidate row in [0, 1]; it gives values {seen}"
            + (f" and {nulls} NULLs" if nulls else ""),
        )
