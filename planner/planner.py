"""The planner: model DDL, and materializing what a statement's model calls need."""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

from pglast import ast, parse_sql
from pglast.enums import ObjectType
from pglast.parser import ParseError

from planner.assertions.runner import Assertions
from planner.calls import CallSite, find_call_sites
from planner.catalog import ModelCatalog
from planner.catalog_events import notify
from planner.classify import Classifier, Decision
from planner.explain import SitePlan
from planner.explain_run import ExplainRun
from planner.install import quote_ident
from planner.labels.calls import LabelCalls
from planner.labels.desk import LabelDesk
from planner.labels.statement import begin_statement
from planner.labels.waiting import run_collecting
from planner.lifecycle import ModelLifecycle
from planner.limit import FIRST_BLOCKS, FIRST_ROWS, LimitPlan, LimitRun, plan_limit
from planner.materialize import Databases, Materialized, materialize_site
from planner.model_spec import ModelSpec
from planner.observe import NULL_OBSERVER, QueryObserver
from planner.outcome import Failed, Forward, Outcome, PlanError, SessionPort
from planner.privileges import require_execute
from planner.read_outputs import read_outputs_sql, wanted_maps
from planner.rewrite import RewriteContext, rewrite
from planner.rewrite.ast_util import column_fields, copy_node, output_columns, render, walk
from planner.rewrite.bind_params import bind_params
from planner.view_access import CLIENT_VIEWS, VIEWS_READ_WHOLE, OwnerPort

log = logging.getLogger("sievedb.planner")

PLAN_CACHE_SIZE = 256
MAX_SUBQUERY_CHECKS = 8  # subqueries per statement Postgres is asked about (one describe each)
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
        observer: QueryObserver = NULL_OBSERVER,
    ) -> None:
        self.dbs = dbs
        self.observer = observer  # told of each sieve.query_log row (the server's metrics)
        self.db = dbs.read
        self.inference = inference_pool
        self.classifier = classifier
        self.models_dir = models_dir
        self.max_model_bytes = max_model_bytes
        self.catalog = ModelCatalog(dbs.read)
        self.lifecycle = ModelLifecycle(self)
        self.assertions = Assertions(self)
        self.labels = LabelDesk(self)  # the labelling page's API (planner/labels)
        self.label_calls = LabelCalls(self)
        self.http_base_url: str | None = None  # where the web face is served, when it is
        self._plans: OrderedDict = OrderedDict()  # (sql, bound values, rewritable) -> analysis

    async def start(self) -> None:
        await self.refresh()
        await self.lifecycle.reinstall_stale()

    async def refresh(self) -> None:
        self._plans.clear()
        await self.catalog.reload()
        self.classifier.set_models(self.catalog.names, set(self.catalog.views))
        self.assertions.catalog_changed()

    async def _views_changed(self) -> None:
        """After forwarded DDL that may change model views: reload, and tell the other
        front-ends (migration 0015's event trigger tells them too, at the DDL's commit, where
        the backing role could create it: this NOTIFY misses a view still uncommitted)."""
        await self.refresh()
        await notify(self.db, "views")

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
        begin_statement(sql)  # what labels the statement asks for and reads (planner/labels)
        if decision.reason == "labels":
            outcome = await self.label_calls.run(sql, port, params)
            return outcome if outcome is not None else Forward()
        if decision.reason == "assertion":
            outcome = await self.assertions.run(sql, port, params)
            if outcome is not None:
                return outcome
            return Forward()
        # --- approximate queries (planner/approx): a trailing clause Postgres cannot parse
        if not decision.executes_itself:
            from planner.approx.run import ExactInstead, run_approximate

            # the labels its sample needs are asked for at once (planner/labels)
            approximate = await run_collecting(
                lambda held: run_approximate(self, sql, held, rewritable, params), self.dbs, port
            )
            if isinstance(approximate, ExactInstead):
                sql = approximate.sql  # the clause cannot apply: the exact path answers (a NOTICE said why)
            elif approximate is not None:
                return approximate
        # --- end approximate queries
        key = (sql, _params_key(params), rewritable)
        prepared = self._plans.get(key) if not decision.executes_itself else None
        if prepared is not None:  # the same text (and bound values) again: skip parse and analysis
            self._plans.move_to_end(key)
            return await self._query(sql, prepared[0], prepared[1], port, rewritable)
        try:
            statements = [raw.stmt for raw in parse_sql(sql)]
        except ParseError as exc:
            if decision.executes_itself:
                return Failed(SYNTAX_ERROR, str(exc))
            return Forward()  # Postgres reports the syntax error in its own words
        if decision.lifecycle and (outcome := await self.lifecycle.run(statements, port)) is not None:
            return outcome
        if len(statements) == 1 and isinstance(statements[0], ast.ExplainStmt) and not params:
            return await self._explain(sql, statements[0], port, rewritable)
        changes_views = any(_changes_views(stmt) for stmt in statements)
        if params:
            statements = [bind_params(stmt, params) for stmt in statements]
        if changes_views:
            outcome = await self._query(sql, statements, self.analyse(statements), port, rewritable)
            # learn the new view once Postgres has made it
            return Forward(after=self._views_changed) if isinstance(outcome, Forward) else outcome
        analysis = self.analyse(statements)
        if analysis.sites:
            uncorrelated = await self._uncorrelated(analysis.statements, port)
            if uncorrelated:  # again, now that they may move: one analysis where there are none
                analysis = self.analyse(statements, uncorrelated)
        self._remember(key, statements, analysis)
        return await self._query(sql, statements, analysis, port, rewritable)

    def _remember(self, key, statements: list, analysis: Analysis) -> None:
        """Statements repeat (dashboards, prepared statements): keep their analysis, bounded,
        until the catalog changes. Cached trees are never modified: runs work on copies."""
        self._plans[key] = (statements, analysis)
        if len(self._plans) > PLAN_CACHE_SIZE:
            self._plans.popitem(last=False)

    # -- queries ------------------------------------------------------------------------------

    def _context(self) -> RewriteContext:
        models = self.catalog.models
        return RewriteContext(
            models=set(models),
            views=self.catalog.views,
            table_models={name for name, spec in models.items() if spec.returns_table},
        )

    def analyse(
        self,
        statements: list,
        uncorrelated: frozenset[str] = frozenset(),
        excluded: frozenset[str] = frozenset(),
    ) -> Analysis:
        """The planning statements (views inlined, unread model columns pruned, conditions
        pushed down: planner.rewrite) and the call sites read off them. ``excluded``: views
        left whole (see _view_access)."""
        ctx = self._context()
        views = {n: d for n, d in ctx.views.items() if n not in excluded}
        ctx = replace(ctx, uncorrelated=uncorrelated, views=views)
        planned = [rewrite(copy_node(stmt), ctx) for stmt in statements]
        sites = find_call_sites(planned, ctx.models, ctx.push)
        named = frozenset(_named_views(statements, views))
        return Analysis(planned, sites, _forward_sql(statements, planned), uncorrelated, named)

    async def view_access(self, statements: list, analysis: Analysis, port: SessionPort) -> Analysis:
        """The analysis for this session. A view name its search_path resolves elsewhere (a
        table of that name in an earlier schema) is not SieveDB's view: not inlined. A view
        the client may read but whose tables it may not is read whole, as Postgres reads it
        (planner.view_access): not inlined, its models materialized as its owner reads it."""
        if not analysis.views_named:
            return analysis
        names = sorted({n for n, _ in analysis.views_named})
        bare = {n for n, b in analysis.views_named if b}
        rows = await port.fetch(CLIENT_VIEWS, (names,))
        shadowed = {r[0] for r in rows if r[1] and r[0] in bare}
        whole = [r[0] for r in rows if r[2] and r[0] not in shadowed]
        role = rows[0][3] if rows else port.user
        opaque = dict(await self.db.fetch(VIEWS_READ_WHOLE, whole, role)) if whole else {}
        if not shadowed and not opaque:
            return analysis
        left_whole = self.analyse(statements, analysis.uncorrelated, frozenset(shadowed | set(opaque)))
        read = _column_names_read(statements)
        left_whole.opaque = {view: (owner, self._view_sites(view, read)) for view, owner in opaque.items()}
        return left_whole

    def _view_sites(self, view: str, read: set[str] | None) -> list[CallSite]:
        """The call sites of a view's own definition, for the columns the statement may read
        (``read``: names it mentions; None, all of them: it says ``*`` or names a whole row):
        an unread model column of the view never runs, as when the view is inlined."""
        columns = output_columns(parse_sql(self.catalog.views[view])[0].stmt)
        # none read: "1", its rows still count (a model in its WHERE or FROM still runs)
        listed = "*" if read is None else ", ".join(quote_ident(c) for c in columns if c in read) or "1"
        return self.analyse([parse_sql(f"SELECT {listed} FROM public.{quote_ident(view)}")[0].stmt]).sites

    async def materialize_views(self, analysis: Analysis, port: SessionPort, done: Materialized) -> None:
        """The models of views read whole, as their owners read them (before any other site:
        those may read the views' outputs)."""
        for owner, sites in analysis.opaque.values():
            async with OwnerPort(self.dbs.read, owner, port) as as_owner:
                for site in sites:
                    spec = self.catalog.get(site.model)
                    await materialize_site(site, spec, self.dbs, self.inference, as_owner, done)

    async def _query(
        self, sql: str, statements: list, analysis: Analysis, port: SessionPort, rewritable: bool
    ) -> Outcome:
        started = time.monotonic()
        if not analysis.sites:
            return Forward()
        analysis = await self.view_access(statements, analysis, port)
        if not analysis.sites and not analysis.opaque:
            return Forward()
        await self.validate(sql, statements, port)
        await require_execute(port, self.specs(analysis.all_sites))
        done = Materialized()
        await self.materialize_views(analysis, port, done)
        limit = self.limit_plan(analysis) if rewritable and not analysis.opaque else None
        if limit is not None:
            run = await self.limited(limit, port, done)
            await self.finish(sql, done, started, port)
            if run.stopped:
                return Forward(sql=limit.sql())
            return Forward(sql=analysis.forward_sql) if analysis.forward_sql else Forward()
        final = analysis.statements if analysis.forward_sql else statements  # what Postgres runs
        done.maps_wanted = wanted_maps(final, self.catalog.models) if rewritable else frozenset()
        await self.materialize_all(analysis.sites, port, done)
        await self.finish(sql, done, started, port)
        self.assertions.monitor({m for m, n in done.model_calls.items() if n > 0}, port)
        if not rewritable or any(_has_params(s) for s in final):
            return Forward()  # a value known only to Postgres: its SQL must keep the $n
        return Forward(sql=read_outputs_sql(final, self.catalog.models, done.maps) or analysis.forward_sql)

    async def _uncorrelated(self, planned: list, port: SessionPort) -> frozenset[str]:
        """Subqueries in the WHERE clauses of planning statements built with none known (the
        passes do not move them then, so they are spelled as the next analysis finds them) that
        read nothing of the statement around them: Postgres can prepare them on their own.
        Those may narrow inputs anywhere (push_down). Checked only outside transaction blocks,
        where a failed check costs nothing."""
        if port.in_transaction:
            return frozenset()
        found = set()
        for text in dict.fromkeys(_where_subqueries(planned)):
            try:
                await port.column_types(text)
            except PlanError:
                continue  # correlated (or invalid: Postgres will say so for the statement)
            found.add(text)
        return frozenset(found)

    def limit_plan(self, analysis: Analysis) -> LimitPlan | None:
        """An early-stopping plan on a copy of the planning statement; None where it does not
        apply or where a parameter's value is unknown (its SQL must run with no parameters)."""
        if len(analysis.statements) != 1 or getattr(analysis.statements[0], "limitCount", None) is None:
            return None  # checked before copying the tree: most statements have no LIMIT
        if _has_params(analysis.statements[0]):
            return None
        plan = plan_limit([copy_node(analysis.statements[0])])
        if plan is not None:
            plan.uncorrelated = analysis.uncorrelated
        return plan

    async def validate(self, sql: str, statements: list, port: SessionPort) -> None:
        """Postgres checks the statement (parse analysis, no execution) before any model runs:
        a statement it rejects costs no model call. Bound statements were checked at their
        Parse; several statements in one string may depend on each other: left to Postgres."""
        if len(statements) != 1 or "$" in sql and _has_params(statements[0]):
            return
        if isinstance(statements[0], ast.SelectStmt | ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
            await port.column_types(sql)

    async def finish(self, sql: str, done: Materialized, started: float, port: SessionPort) -> None:
        await self._log(sql, done, started, port)
        await self._record_costs([self.catalog.get(m) for m, runs in done.model_calls.items() if runs])

    async def limited(self, limit: LimitPlan, port: SessionPort, done: Materialized) -> LimitRun:
        """Materialize batch after batch of the driver's rows (doubling), until the statement
        restricted to the rows done has its LIMIT rows; see planner.limit."""
        if limit.order is not None:
            return await self._limited_by_order(limit, port, done)
        blocks = await port.fetchval(limit.blocks_sql())
        run = LimitRun(total=blocks)
        lo, size = 0, FIRST_BLOCKS
        while True:
            hi = lo + size if lo + size < blocks else None
            limit.set_range(lo, hi)
            await self.materialize_all(self._limit_sites(limit), port, done)
            if hi is None:
                run.done = blocks
                return run  # the whole table is done: the statement runs as sent
            limit.set_range(0, hi)
            self._limit_sites(limit)  # the statement over every block done, for the count
            run.done = hi
            if await port.fetchval(limit.count_sql()) >= limit.limit:
                run.stopped = True
                return run
            lo, size = hi, size * 2

    async def _limited_by_order(self, limit: LimitPlan, port: SessionPort, done: Materialized) -> LimitRun:
        run = LimitRun(total=None)
        rows = FIRST_ROWS
        while True:
            bound = await port.fetch(limit.bound_sql(rows))
            if not bound or bound[0][0] is None:
                limit.set_all()  # fewer rows than that (or only NULL keys left): all of them
                await self.materialize_all(self._limit_sites(limit), port, done)
                return run
            limit.set_bound(bound[0][0], bound[0][1])
            await self.materialize_all(self._limit_sites(limit), port, done)
            run.done = rows
            if await port.fetchval(limit.count_sql()) >= limit.limit:
                run.stopped = True
                return run
            rows *= 2

    def _limit_sites(self, limit: LimitPlan) -> list[CallSite]:
        ctx = replace(self._context(), uncorrelated=limit.uncorrelated)
        return find_call_sites([limit.refresh(ctx.push)], ctx.models, ctx.push)

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
                "UPDATE sieve.models SET cost_ms_per_row = $1::jsonb, stats = $2::jsonb, "
                "replicas = $5::jsonb WHERE name = $3 AND version = $4",
                json.dumps(stats.ms_per_row),
                json.dumps(summary),
                spec.name,
                spec.version,
                json.dumps(pool.replicas(spec.key)),  # node -> replicas, rows, ms/row
            )

    def specs(self, sites: list) -> list[ModelSpec]:
        return [self.catalog.get(name) for name in dict.fromkeys(site.model for site in sites)]

    async def _explain(self, sql: str, stmt: ast.ExplainStmt, port: SessionPort, rewritable: bool) -> Outcome:
        return await ExplainRun(self, sql, stmt, port, rewritable).run()

    async def materialize_all(
        self, sites: list, port: SessionPort, done: Materialized, plans: list[SitePlan] | None = None
    ) -> None:
        """Run every site's uncached inputs; with ``plans`` (EXPLAIN ANALYZE) note each site's
        model calls and cache hits on its plan."""
        for i, site in enumerate(sites):
            spec = self.catalog.get(site.model)
            calls, hits = done.model_calls.get(spec.name, 0), done.cache_hits
            await materialize_site(site, spec, self.dbs, self.inference, port, done)
            if plans is not None:
                plans[i].actual_calls = done.model_calls.get(spec.name, 0) - calls
                plans[i].actual_hits = done.cache_hits - hits

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
        self.observer.query_logged("exact", done.model_calls, done.cache_hits)


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


def _where_subqueries(statements: list):
    """SQL of the subqueries in WHERE clauses (up to MAX_SUBQUERY_CHECKS)."""
    count = 0
    for stmt in statements:
        for node in walk(stmt):
            where = getattr(node, "whereClause", None) if isinstance(node, ast.SelectStmt) else None
            for sub in walk(where) if where is not None else ():
                if isinstance(sub, ast.SubLink):
                    count += 1
                    if count > MAX_SUBQUERY_CHECKS:
                        return
                    yield render(sub.subselect)


def _has_params(stmt) -> bool:
    return any(isinstance(n, ast.ParamRef) for n in walk(stmt))


@dataclass
class Analysis:
    statements: list  # planning statements (planner.rewrite)
    sites: list[CallSite]
    # What Postgres runs when the planning statement differs from the client's: Postgres then
    # filters rows exactly as the input queries did (it derives no OR-implied or transferred
    # conditions of its own), so it never asks for an output that was not materialized.
    forward_sql: str | None = None
    uncorrelated: frozenset[str] = frozenset()  # WHERE subqueries Postgres prepared on their own
    views_named: frozenset[tuple[str, bool]] = frozenset()  # model views named (without a schema?)
    opaque: dict[str, tuple[str, list[CallSite]]] = field(default_factory=dict)  # view -> owner, sites

    @property
    def all_sites(self) -> list[CallSite]:
        return [*(s for _, sites in self.opaque.values() for s in sites), *self.sites]


def _column_names_read(statements: list) -> set[str] | None:
    """Every name the statements read as a column, qualified or not; None where one reads
    whole rows (``*``, ``t.*``, or a bare name that may be a row: it is kept as a name too)."""
    names: set[str] = set()
    for stmt in statements:
        for node in walk(stmt):
            if isinstance(node, ast.ColumnRef):
                fields = column_fields(node)
                if fields[-1] is None:
                    return None
                names.add(fields[-1])
    return names


def _named_views(statements: list, views: dict[str, str]):
    """(name, named without a schema) of each public model view the statements name."""
    for stmt in statements:
        for node in walk(stmt):
            named = isinstance(node, ast.RangeVar) and node.relname in views and node.catalogname is None
            if named and node.schemaname in (None, "public"):
                yield node.relname, node.schemaname is None


def _forward_sql(statements: list, planned: list) -> str | None:
    if len(statements) != 1 or not isinstance(planned[0], ast.SelectStmt) or _has_params(planned[0]):
        return None
    text = render(planned[0])
    return None if text == render(statements[0]) else text
