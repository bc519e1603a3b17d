"""Approximate queries: a trailing clause turns a statement over models into a sampled answer
with a stated guarantee.

The pipeline: split the clause off (``clause``), parse and bind the statement, merge the model
views it reads (``flatten``), read the plan off it (``analyse``, pure), then hand the plan to its
operator (``OPERATORS``), which does its Postgres I/O through ``io`` and reports through
``report``. Works over both protocols: with an extended-protocol execution the bound values are
put in place first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.parser import ParseError

from planner.approx.aggregate_op import run_aggregate
from planner.approx.analyse import analyse
from planner.approx.clause import ApproxClause, bind_clause, split_clause
from planner.approx.context import ApproxRun
from planner.approx.explain import (
    aggregate_actuals,
    limit_actuals,
    plan_json,
    plan_lines,
    plan_tree,
    selection_actuals,
)
from planner.approx.flatten import flatten_views
from planner.approx.io import ApproxIO
from planner.approx.limit_op import ScanOrderInstead, run_limit
from planner.approx.report import Reporter, selection_mode
from planner.approx.selection import run_selection
from planner.approx.settings import SessionSettings, read_settings
from planner.explain import read_explain
from planner.materialize import Materialized
from planner.outcome import Outcome, PlanError, Rows, SessionPort
from planner.privileges import require_execute
from planner.rewrite.ast_util import has_aggregates, mentions_model, render, single_select
from planner.sqlstate import FEATURE_NOT_SUPPORTED, SYNTAX_ERROR

OPERATORS = {"selection": run_selection, "limit": run_limit, "aggregate": run_aggregate}


@dataclass(frozen=True)
class ExactInstead:
    """Answer ``sql`` as an exact query (the planner's usual path), after the NOTICE that says why."""

    sql: str


async def run_approximate(
    planner, sql: str, port: SessionPort, rewritable: bool, params: list | None = None
) -> Outcome | ExactInstead | None:
    """The outcome of a statement carrying an approximate clause, or (with no clause) of a SELECT
    calling a model while the session sets a target (``SET sieve.recall_target = 0.9``, ...);
    None when the statement is not approximate."""
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
        explain = (request.analyze, request.json)
        statements = [statements[0].query]
    if len(statements) != 1 or not isinstance(statements[0], ast.SelectStmt):
        raise PlanError(FEATURE_NOT_SUPPORTED, "an approximate clause applies to a single SELECT")
    settings = await read_settings(port)
    clause = settings.fill(bind_clause(clause, params))
    stmt = _bound(statements[0], params)
    await _validate(port, render(stmt))
    run = _prepare(planner, sql, stmt, clause, port, settings)
    if run.plan.kind == "exact":
        port.notice("approximate clause ignored: this query runs no model, so Postgres answers it exactly")
        return ExactInstead(body)
    if explain is not None:
        return await _explain(run, *explain)
    return await _execute(run, body)


async def _execute(run: ApproxRun, body: str) -> Outcome | ExactInstead:
    await require_execute(run.port, [run.planner.catalog.get(m) for m in run.plan.models])
    try:
        return await OPERATORS[run.plan.kind](run)
    except ScanOrderInstead:
        return ExactInstead(body)


def _prepare(planner, sql: str, stmt: ast.SelectStmt, clause: ApproxClause, port, settings) -> ApproxRun:
    clause = _flatten(planner, stmt, clause)
    return _run(planner, analyse(sql, stmt, clause, planner.catalog.models), port, settings)


def _run(planner, plan, port: SessionPort, settings: SessionSettings) -> ApproxRun:
    done = Materialized()
    io = ApproxIO(planner, port, plan, done)
    return ApproxRun(planner, port, plan, settings, io, Reporter(plan, settings, port, io, done), done)


async def _validate(port: SessionPort, sql: str) -> None:
    """Postgres describes the statement before any model runs: an unknown function, column or
    table gets Postgres's own error, not a complaint about the clause. Then it starts it, reading
    no row: privileges are checked when a query starts, not when it is described, and the views
    the statement names are merged away below (a view the role may not read gets 42501 here)."""
    await port.column_types(sql)
    await port.fetch(f"SELECT 1 FROM ({sql}) AS sieve_q LIMIT 0", (), lenient=True)


async def _explain(run: ApproxRun, analyze: bool, as_json: bool) -> Rows:
    """EXPLAIN [ANALYZE]: ANALYZE runs the sampling (calls, NOTICE, query_log) but returns the
    plan instead of rows."""
    plan = run.plan
    mode = selection_mode(plan.clause)[0] if plan.kind == "selection" else plan.kind
    analyzed = None
    if analyze:
        await _execute(run, "")  # a capped LIMIT search answers its plan here, not in scan order
        actuals = run.report.actuals
        if plan.kind == "aggregate":
            analyzed = aggregate_actuals(actuals.get("names", []), actuals.get("results", []), actuals)
        elif plan.kind == "limit":
            analyzed = limit_actuals(actuals)
        else:
            analyzed = selection_actuals(actuals.get("result"), actuals, actuals.get("auto"))
    node = plan_tree(plan, run.settings.bound, mode, analyzed)
    if as_json:
        return Rows(["QUERY PLAN"], [[plan_json(node)]], "EXPLAIN")
    return Rows(["QUERY PLAN"], [[line] for line in plan_lines(node)], "EXPLAIN")


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
    stmt = single_select(sql)
    if stmt is None or stmt.op.name != "SETOP_NONE" or not stmt.fromClause:
        return None
    settings = await read_settings(port)
    if not settings.has_target:
        return None
    aggregate = bool(stmt.groupClause) or has_aggregates(stmt.targetList or ())
    clause = settings.clause_for(aggregate=aggregate)
    if clause is None:
        return None
    stmt = _bound(stmt, params)
    as_sent = render(stmt)  # before the views are merged into it
    flat = _flatten(planner, stmt, clause)
    models = planner.catalog.names
    wanted = stmt if aggregate else stmt.whereClause
    if wanted is None or not mentions_model(wanted, models, _lateral_aliases(stmt, models)):
        return None
    await _validate(port, as_sent)
    plan = analyse(sql, stmt, flat, planner.catalog.models)
    return await _execute(_run(planner, plan, port, settings), sql)


def _lateral_aliases(stmt: ast.SelectStmt, models: set[str]) -> frozenset[str]:
    """Aliases of the LATERAL model functions in FROM: their columns are model outputs."""
    out = set()
    for item in stmt.fromClause or ():
        if isinstance(item, ast.RangeFunction) and item.alias is not None and mentions_model(item, models):
            out.add(item.alias.aliasname)
    return frozenset(out)


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
    flattened = flatten_views(stmt, views)
    _refuse_unmerged(flattened)
    if not flattened:
        if proxy is not None:
            stmt.targetList = stmt.targetList[:-1]
        return clause
    if proxy is None:
        return clause
    rewritten = stmt.targetList[-1]
    stmt.targetList = stmt.targetList[:-1]
    return dataclasses.replace(clause, proxy=render(rewritten.val))


def _refuse_unmerged(flattened) -> None:
    """A model view left as a subquery hides its model from the operators (they would read its
    outputs from a cache that may not hold them): refuse, naming the view and why."""
    flattened.refuse()
    if flattened.nested:
        view, reason = flattened.nested[0].view, flattened.nested[0].reason
        raise PlanError(
            FEATURE_NOT_SUPPORTED,
            f"the model view {view} is read inside a subquery of an approximate query ({reason})",
            hint="approximate queries sample the model views of their own FROM; run this query exactly, "
            "or compute the subquery's value first",
        )
