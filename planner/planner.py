"""The planner: model DDL, and materializing what a statement's model calls need."""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from pathlib import Path

from pglast import ast, parse_sql
from pglast.enums import ObjectType
from pglast.parser import ParseError

from planner.bound_params import bind_params
from planner.calls import find_call_sites
from planner.catalog import ModelCatalog
from planner.classify import Classifier, Decision
from planner.explain import SitePlan, json_plan, read_explain, text_plan
from planner.lifecycle import ModelLifecycle
from planner.limit import plan_limit
from planner.materialize import Databases, Materialized, materialize_site, pending_inputs_sql
from planner.model_spec import ModelSpec
from planner.outcome import Failed, Forward, Outcome, Rows, SessionPort
from planner.privileges import require_execute
from planner.views import inline_views, push_down

log = logging.getLogger("sievedb.planner")

PLAN_CACHE_SIZE = 256
DEFAULT_MAX_MODEL_BYTES = 2 << 30  # --max-model-bytes
NEXT_MODEL_ID = "SELECT nextval('sieve.model_ids')"
REINSTALL_LOCK = 0x5133_7EDC  # advisory lock: one server at a time re-installs stale models
STALE_MODELS = (
    "SELECT name FROM sieve.models "
    "WHERE to_regclass(format('sieve_cache.m%s_v%s', id, version)) IS NULL ORDER BY id"
)
SYNTAX_ERROR = "42601"
DUPLICATE_FUNCTION = "42723"
UNDEFINED_FUNCTION = "42883"
FEATURE_NOT_SUPPORTED = "0A000"


class Planner:
    def __init__(
        self,
        dbs: Databases,
        inference_pool,
        classifier: Classifier,
        models_dir: Path,
        max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    ) -> None:
        self.dbs = dbs
        self.db = dbs.read
        self.inference = inference_pool
        self.classifier = classifier
        self.models_dir = models_dir
        self.max_model_bytes = max_model_bytes
        self.catalog = ModelCatalog(dbs.read)
        self.lifecycle = ModelLifecycle(self)
        self._plans: OrderedDict = OrderedDict()  # (sql, bound values, rewritable) -> analysis

    async def start(self) -> None:
        await self.refresh()
        await self.lifecycle.reinstall_stale()

    async def refresh(self) -> None:
        self._plans.clear()
        await self.catalog.reload()
        self.classifier.set_models(self.catalog.names, set(self.catalog.views))

    async def run(
        self,
        decision: Decision,
        sql: str,
        port: SessionPort,
        params: list | None = None,
        rewritable: bool = False,
    ) -> Outcome:
        """Plan one held statement; ``params`` are the bound values of an extended-protocol
        execution (text with a type name, None where unknown)."""
        # --- approximate queries (planner/approx): a trailing clause Postgres cannot parse
        if not decision.executes_itself:
            from planner.approx.run import run_approximate

            approximate = await run_approximate(self, sql, port, rewritable, params)
            if approximate is not None:
                return approximate
        # --- end approximate queries
        key = (sql, _params_key(params), rewritable)
        prepared = self._plans.get(key) if not decision.executes_itself else None
        if prepared is not None:  # the same text (and bound values) again: skip parse and analysis
            self._plans.move_to_end(key)
            return await self._query(sql, prepared[0], port, rewritable, prepared[1])
        try:
            statements = [raw.stmt for raw in parse_sql(sql)]
        except ParseError as exc:
            if decision.executes_itself:
                return Failed(SYNTAX_ERROR, str(exc))
            return Forward()  # Postgres reports the syntax error in its own words
        if decision.executes_itself:
            return await self.lifecycle.run(statements, port)
        if rewritable and len(statements) == 1 and isinstance(statements[0], ast.ExplainStmt):
            return await self._explain(sql, statements[0], port)
        changes_views = any(_changes_views(stmt) for stmt in statements)
        if params:
            statements = [bind_params(stmt, params) for stmt in statements]
        if changes_views:
            outcome = await self._query(sql, statements, port, rewritable)
            # learn the new view once Postgres has made it
            return Forward(after=self.refresh) if isinstance(outcome, Forward) else outcome
        sites = self._sites(statements)
        self._remember(key, statements, sites)
        return await self._query(sql, statements, port, rewritable, sites)

    def _remember(self, key, statements: list, sites: list) -> None:
        """Statements repeat (dashboards, prepared statements): keep their analysis, bounded,
        until the catalog changes. The ASTs are only ever modified and restored synchronously."""
        self._plans[key] = (statements, sites)
        if len(self._plans) > PLAN_CACHE_SIZE:
            self._plans.popitem(last=False)

    # -- queries ------------------------------------------------------------------------------

    async def _query(
        self, sql: str, statements: list, port: SessionPort, rewritable: bool, sites: list | None = None
    ) -> Outcome:
        started = time.monotonic()
        sites = self._sites(statements) if sites is None else sites
        if not sites:
            return Forward()
        await require_execute(port, self._specs(sites))
        done = Materialized()
        limit = plan_limit(statements, sites, self.catalog.models) if rewritable else None
        if limit is not None:
            return await self._limited(sql, limit, port, done, started)
        for site in sites:
            spec = self.catalog.get(site.model)
            await materialize_site(site, spec, self.dbs, self.inference, port, done)
        await self._log(sql, done, started, port)
        await self._record_costs([self.catalog.get(m) for m, runs in done.model_calls.items() if runs])
        return Forward()

    async def _record_costs(self, specs: list[ModelSpec]) -> None:
        """Persist what the pool measured: cost per row per device, and batch sizes."""
        pool = self.inference.pool
        if pool is None:
            return
        for spec in specs:
            stats = pool.stats(spec.key)
            summary = {
                "requests": stats.requests,
                "batches": stats.batches,
                "rows": stats.rows,
                "max_batch_rows": stats.max_batch_rows,
                "mean_batch_rows": stats.mean_batch_rows,
                "recent_batch_sizes": list(stats.recent_batch_sizes[-64:]),
            }
            await self.db.execute(
                "UPDATE sieve.models SET cost_ms_per_row = $1::jsonb, stats = $2::jsonb "
                "WHERE name = $3 AND version = $4",
                json.dumps(stats.ms_per_row),
                json.dumps(summary),
                spec.name,
                spec.version,
            )

    def _specs(self, sites: list) -> list[ModelSpec]:
        return [self.catalog.get(name) for name in dict.fromkeys(site.model for site in sites)]

    def _sites(self, statements: list) -> list:
        models = self.catalog.names
        for stmt in statements:
            inline_views(stmt, self.catalog.views)
            push_down(stmt, models)
        return find_call_sites(statements, models)

    async def _explain(self, sql: str, stmt, port: SessionPort) -> Outcome:
        request = read_explain(stmt)
        sites = self._sites([request.statement])
        request.sites = [SitePlan(site, self.catalog.get(site.model)) for site in sites]
        await require_execute(port, self._specs(sites))
        if request.analyze:
            done = Materialized()
            for plan in request.sites:
                await self._analyze_site(plan, port, done)
            await self._log(sql, done, request.started, port)
        else:
            for plan in request.sites:
                (row,) = await port.fetch(pending_inputs_sql(plan.site, plan.spec))
                plan.to_run, plan.cached = row[0], row[1]
        result = await port.run_sql(sql)
        if result.error is not None:
            return result.error
        lines = [r[0] for r in result.rows]
        if request.json:
            return Rows(["QUERY PLAN"], [[json_plan(request, "\n".join(lines))]], "EXPLAIN")
        return Rows(["QUERY PLAN"], [[line] for line in text_plan(request, lines)], "EXPLAIN")

    async def _analyze_site(self, plan: SitePlan, port: SessionPort, done: Materialized) -> None:
        before = dict(done.model_calls), done.cache_hits
        pool = self.inference.pool
        seconds = pool.stats(plan.spec.key).inference_seconds if pool is not None else 0.0
        await materialize_site(plan.site, plan.spec, self.dbs, self.inference, port, done)
        plan.actual_calls = done.model_calls.get(plan.spec.name, 0) - before[0].get(plan.spec.name, 0)
        plan.actual_hits = done.cache_hits - before[1]
        pool = self.inference.pool
        stats = pool.stats(plan.spec.key) if pool is not None else None
        plan.inference_ms = 1000 * ((stats.inference_seconds if stats else 0.0) - seconds)
        if stats and stats.rows_by_device:
            plan.device = ",".join(sorted(stats.rows_by_device))

    async def _limited(
        self, sql: str, plan, port: SessionPort, done: Materialized, started: float
    ) -> Outcome:
        """LIMIT k: materialize in growing batches, count after each one only the rows that are
        new to the check, stop at k. With a row key (a single blob table) cached rows are found
        by the same stream; otherwise the cache is counted once up front."""
        keyed = plan.site.row_key is not None
        found = 0 if keyed else await _count(port, plan.count_sql(plan.cached_guard()))
        checked: list = []

        async def enough(keys: list) -> bool:
            nonlocal found
            if keys:
                checked.extend(keys)
                found += await _count(port, plan.count_sql(plan.batch_guard(keys)))
            return found >= plan.rows

        stopped = found >= plan.rows
        if not stopped:
            stopped = await materialize_site(
                plan.site, plan.spec, self.dbs, self.inference, port, done, enough
            )
        done.model_calls.setdefault(plan.spec.name, 0)
        await self._log(sql, done, started, port)
        await self._record_costs([plan.spec] if done.model_calls[plan.spec.name] else [])
        if not stopped:
            return Forward()  # the whole input set is materialized: the statement runs as sent
        guard = plan.batch_guard(checked) if keyed else plan.cached_guard()
        return Forward(sql=plan.guarded_sql(guard), settings={"sieve.lenient": "on"})

    async def _log(self, sql: str, done: Materialized, started: float, port: SessionPort) -> None:
        elapsed_ms = 1000 * (time.monotonic() - started)
        await self.db.execute(
            "INSERT INTO sieve.query_log (query, mode, model_calls, cache_hits, elapsed_ms, role) "
            "VALUES ($1, 'exact', $2::jsonb, $3, $4, $5)",
            sql,
            json.dumps(done.model_calls),
            done.cache_hits,
            elapsed_ms,
            port.user,
        )


async def _count(port: SessionPort, sql: str) -> int:
    """Count under the guard, in the client's session; lenient reads because Postgres may test
    the guard last."""
    return await port.fetchval(sql, lenient=True)


def _params_key(params: list | None) -> tuple | None:
    if not params:
        return None
    return tuple(None if p is None else (p.text, p.type_name) for p in params)


def _changes_views(stmt) -> bool:
    if isinstance(stmt, ast.ViewStmt):
        return True
    if isinstance(stmt, ast.DropStmt):
        return stmt.removeType in (ObjectType.OBJECT_VIEW, ObjectType.OBJECT_TABLE, ObjectType.OBJECT_SCHEMA)
    return isinstance(stmt, ast.AlterTableStmt | ast.RenameStmt)
