"""Running EXPLAIN [ANALYZE] of a statement that calls models: what the planner would do,
or what it did, above Postgres's plan of the SQL Postgres runs (planner.explain formats it)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pglast import ast, parse_sql

from planner.explain import ExplainRequest, SitePlan, json_plan, read_explain, text_plan
from planner.materialize import Materialized, pending_inputs_sql
from planner.outcome import Forward, Outcome, Rows, SessionPort
from planner.privileges import require_execute
from planner.rewrite.ast_util import models_called, render

if TYPE_CHECKING:
    from planner.planner import Planner


class ExplainRun:
    """One EXPLAIN. Without ANALYZE nothing runs (a site whose inputs come from another model
    says so instead of counting them); with ANALYZE the statement runs as it would (LIMIT's
    early stop included) and the total time includes inference."""

    def __init__(
        self, planner: Planner, sql: str, stmt: ast.ExplainStmt, port: SessionPort, rewritable: bool
    ):
        self.planner, self.sql, self.stmt, self.port, self.rewritable = planner, sql, stmt, port, rewritable

    async def run(self) -> Outcome:
        """EXPLAIN: the model operators above Postgres's plan. Without ANALYZE nothing runs (a
        site whose inputs come from another model says so instead of counting them); with
        ANALYZE the statement runs as it would (LIMIT's early stop included)."""
        planner, sql, stmt, port = self.planner, self.sql, self.stmt, self.port
        request = read_explain(stmt)
        analysis = planner.analyse([request.statement])
        if analysis.sites:
            analysis = await planner.view_access([request.statement], analysis, port)
        if not analysis.sites and not (analysis.opaque and request.analyze):
            return Forward()
        await planner.validate(request.inner_sql, [request.statement], port)
        await require_execute(port, planner.specs(analysis.all_sites))
        request.sites = [SitePlan(site, self.planner.catalog.get(site.model)) for site in analysis.sites]
        if request.analyze:
            target = await self._analyze(request, analysis)
        else:
            await self._count_inputs(request)
            # Postgres's plan of what it would run: the planning statement
            target = explain_of(stmt, analysis.forward_sql) if analysis.forward_sql else sql
        result = await port.run_sql(target)
        if result.error is not None:
            return result.error
        request.total_ms = 1000 * (time.monotonic() - request.started)
        lines = [r[0] for r in result.rows]
        if request.json:
            return Rows(["QUERY PLAN"], [[json_plan(request, "\n".join(lines))]], "EXPLAIN")
        return Rows(["QUERY PLAN"], [[line] for line in text_plan(request, lines)], "EXPLAIN")

    async def _count_inputs(self, request: ExplainRequest) -> None:
        models = self.planner.catalog.names
        for plan in request.sites:
            query = pending_inputs_sql(plan.site, plan.spec)
            plan.depends = sorted(models_called(parse_sql(query)[0].stmt, models))
        for plan in request.sites:
            if not plan.depends:
                (row,) = await self.port.fetch(pending_inputs_sql(plan.site, plan.spec))
                plan.to_run, plan.cached = row[0], row[1]

    async def _analyze(self, request: ExplainRequest, analysis) -> str:
        """Materialize as the statement would; the SQL whose plan Postgres then shows."""
        planner, sql, stmt, port, rewritable = self.planner, self.sql, self.stmt, self.port, self.rewritable
        done = Materialized()
        await planner.materialize_views(analysis, port, done)
        limit = planner.limit_plan(analysis) if rewritable and not analysis.opaque else None
        target = explain_of(stmt, analysis.forward_sql) if analysis.forward_sql else sql
        if limit is not None:
            request.limit_run = await self._measured(
                request, done, lambda: planner.limited(limit, port, done)
            )
            if request.limit_run.stopped:
                target = render(ast.ExplainStmt(query=limit.statement, options=stmt.options))
        else:
            await self._measured(
                request,
                done,
                lambda: planner.materialize_all(analysis.sites, port, done, request.sites),
            )
        await planner.finish(sql, done, request.started, port)
        request.cache_hits = done.cache_hits
        for plan in request.sites:
            if plan.actual_calls is None:  # LIMIT: counted per model, not per site
                plan.actual_calls = done.model_calls.get(plan.spec.name, 0)
        return target

    async def _measured(self, request: ExplainRequest, done: Materialized, work):
        """Run ``work`` and note each model's inference time and devices on its site plans."""
        pool = self.planner.inference.pool
        specs = {p.spec.key: p.spec for p in request.sites}
        before = {k: pool.stats(k).inference_seconds if pool is not None else 0.0 for k in specs}
        result = await work()
        for plan in request.sites:
            stats = pool.stats(plan.spec.key) if pool is not None else None
            seconds = (stats.inference_seconds if stats else 0.0) - before[plan.spec.key]
            plan.inference_ms = 1000 * seconds
            if stats and stats.rows_by_device:
                plan.device = ",".join(sorted(stats.rows_by_device))
        return result


def explain_of(stmt: ast.ExplainStmt, query_sql: str) -> str:
    """The client's EXPLAIN (its options) of another statement."""
    return render(ast.ExplainStmt(query=parse_sql(query_sql)[0].stmt, options=stmt.options))
