"""``analyse``: the approximate plan of a SELECT (views already merged) and its clause. Pure: no
I/O, so every shape decision is testable with SQL text alone (tests/planner/test_approx_analyse.py).

What is refused here is refused before any model runs, with 0A000 and the reason; nothing is
answered another way than the one the clause asks for.
"""

from __future__ import annotations

from pglast import ast, keywords, parse_sql
from pglast.enums import JoinType
from pglast.parser import ParseError

from planner.approx.clause import ApproxClause
from planner.approx.plan import Aggregate, ApproxPlan, Output
from planner.calls import find_call_sites
from planner.install import quote_ident
from planner.outcome import PlanError
from planner.rewrite.ast_util import conjuncts, has_aggregates, mentions_model, models_called, render, walk
from planner.rewrite.join_keys import function_calls
from planner.sqlstate import FEATURE_NOT_SUPPORTED

_AGGREGATES = ("count", "sum", "avg")
_KEYWORDS = keywords.RESERVED_KEYWORDS | keywords.TYPE_FUNC_NAME_KEYWORDS | keywords.COL_NAME_KEYWORDS


def analyse(sql: str, stmt: ast.SelectStmt, clause: ApproxClause, models: dict) -> ApproxPlan:
    """The plan of ``stmt`` under ``clause``; ``models``: model name -> ModelSpec."""
    names = set(models)
    if stmt.op is None or stmt.op.name != "SETOP_NONE":
        raise PlanError(FEATURE_NOT_SUPPORTED, "approximate clauses do not apply to set operations")
    if not stmt.fromClause:
        raise PlanError(FEATURE_NOT_SUPPORTED, "an approximate query needs a FROM clause")
    base, lateral = _from_items(stmt.fromClause, names)
    hidden = frozenset(lateral)
    parts = conjuncts(stmt.whereClause)
    free = [render(c) for c in parts if not mentions_model(c, names, hidden)]
    modelled = [render(c) for c in parts if mentions_model(c, names, hidden)]
    called = list(dict.fromkeys([*lateral.values(), *sorted(models_called(stmt, names))]))
    plan = ApproxPlan(
        kind=_kind(stmt, clause),
        sql=sql,
        stmt=stmt,
        clause=clause,
        unit_names=[_name(table) for item in base for table in _tables(item)],
        unit_from=", ".join(render(item) for item in base),
        from_sql=", ".join(render(item) for item in stmt.fromClause),
        free=free,
        modelled=modelled,
        models=called,
        max_rows=_rows_per_unit(lateral, models),
    )
    _check_proxy_scope(clause, lateral)
    if plan.kind == "aggregate":
        _aggregate_shape(plan, names, hidden)
        if not called:
            plan.kind = "exact"
        return plan
    _oracle_shape(plan, names, lateral)
    return plan


def _check_proxy_scope(clause: ApproxClause, lateral: dict[str, str]) -> None:
    """The proxy scores a unit before any model runs, so it may read the base tables only."""
    if clause.proxy is None or not lateral:
        return
    try:
        expr = parse_sql(f"SELECT ({clause.proxy})")[0].stmt
    except ParseError:
        return  # reported with a hint where the proxy is read
    for node in walk(expr):
        if isinstance(node, ast.ColumnRef) and len(node.fields) > 1:
            first = node.fields[0]
            if isinstance(first, ast.String) and first.sval in lateral:
                raise PlanError(
                    FEATURE_NOT_SUPPORTED,
                    f"USING PROXY {clause.proxy} reads the rows of the model {lateral[first.sval]}, which "
                    "exist only once it has run",
                    hint="a proxy scores the base table's rows (e.g. a cheap model over the frame)",
                )


def _kind(stmt: ast.SelectStmt, clause: ApproxClause) -> str:
    """ "selection", "limit" or "aggregate"; a clause that does not fit the query is an error."""
    if clause.selection and clause.error_target is not None:
        raise PlanError(
            FEATURE_NOT_SUPPORTED,
            "ERROR TARGET (aggregates) cannot be combined with RECALL/PRECISION TARGET (selections)",
        )
    aggregate = bool(stmt.groupClause) or has_aggregates(stmt.targetList or ())
    if clause.selection:
        if aggregate:
            raise PlanError(
                FEATURE_NOT_SUPPORTED, "RECALL/PRECISION TARGET select rows; use ERROR TARGET for aggregates"
            )
        return "selection"
    if clause.error_target is None:
        if stmt.limitCount is not None and not aggregate:
            return "limit"
        raise PlanError(
            FEATURE_NOT_SUPPORTED,
            "this approximate clause names no target: add RECALL, PRECISION or ERROR TARGET "
            "(or LIMIT k before USING PROXY for a proxy-ordered search)",
        )
    if not aggregate:
        raise PlanError(
            FEATURE_NOT_SUPPORTED,
            "ERROR TARGET applies to COUNT/SUM/AVG queries",
            hint="for rows, use RECALL TARGET or PRECISION TARGET",
        )
    return "aggregate"


# -- FROM ---------------------------------------------------------------------------------------


def _from_items(items, models: set[str]) -> tuple[list, dict[str, str]]:
    """(base table items, {alias of a LATERAL model function: its model})."""
    base: list = []
    lateral: dict[str, str] = {}
    for item in items:
        if isinstance(item, ast.RangeFunction):
            alias, model = _model_function(item, models)
            lateral[alias] = model
        elif _tables_only(item):
            base.append(item)
        else:
            raise PlanError(
                FEATURE_NOT_SUPPORTED,
                f"approximate queries read base tables, inner joins of them, model views and LATERAL "
                f"model functions; not {_describe(item)}",
                hint="write the subquery as a view over a table, or run the query exactly",
            )
    if not base:
        raise PlanError(FEATURE_NOT_SUPPORTED, "an approximate query needs a base table in FROM")
    return base, lateral


def _rows_per_unit(lateral: dict[str, str], models: dict) -> int | None:
    """Result rows one unit can give: the product of the LATERAL models' declared row bounds
    (``max_rows``), None when one has none."""
    rows = 1
    for model in lateral.values():
        bound = getattr(models[model], "max_rows", None)
        if bound is None:
            return None
        rows *= int(bound)
    return rows


def _tables_only(item) -> bool:
    if isinstance(item, ast.RangeVar):
        return True
    if isinstance(item, ast.JoinExpr):
        return item.jointype == JoinType.JOIN_INNER and _tables_only(item.larg) and _tables_only(item.rarg)
    return False


def _model_function(item: ast.RangeFunction, models: set[str]) -> tuple[str, str]:
    calls = function_calls(item)
    names = [[n.sval for n in c.funcname][-1] for c in calls]
    if len(calls) != 1 or names[0] not in models or item.ordinality:
        raise PlanError(
            FEATURE_NOT_SUPPORTED,
            f"approximate queries read one model function per FROM item, not {render(item)}",
        )
    alias = item.alias.aliasname if item.alias is not None else names[0]
    return alias, names[0]


def _describe(item) -> str:
    if isinstance(item, ast.RangeSubselect):
        return "a subquery in FROM (a view that could not be merged into the query)"
    if isinstance(item, ast.JoinExpr):
        return "an outer join"
    return render(item)


def _tables(item) -> list:
    if isinstance(item, ast.JoinExpr):
        return _tables(item.larg) + _tables(item.rarg)
    return [item]


def _name(item: ast.RangeVar) -> str:
    if item.alias is not None:
        return _ident(item.alias.aliasname)
    return ".".join(_ident(p) for p in (item.schemaname, item.relname) if p)


def _ident(name: str) -> str:
    """``name`` as SQL: bare when that reads back the same (reserved words such as ``user``
    name a table only when quoted; quoting every keyword is always safe)."""
    plain = name.islower() and name.replace("_", "").isalnum() and not name[0].isdigit()
    return name if plain and name not in _KEYWORDS else quote_ident(name)


# -- selections and LIMIT ------------------------------------------------------------------------


def _oracle_shape(plan: ApproxPlan, models: set[str], lateral: dict[str, str]) -> None:
    if lateral:
        raise PlanError(
            FEATURE_NOT_SUPPORTED,
            f"RECALL/PRECISION TARGET and proxy-ordered LIMIT select rows of base tables; this query "
            f"reads the rows of the table-returning model {next(iter(lateral.values()))}, whose rows "
            "exist only once it has run",
            hint="use ERROR TARGET for COUNT/SUM/AVG over its rows, or run the query exactly",
        )
    if not plan.modelled:
        raise PlanError(
            FEATURE_NOT_SUPPORTED,
            "an approximate selection needs a model predicate in WHERE (a condition calling a model "
            "function), and this query has none",
            hint="filter on a model function call, or on a model output column of a view",
        )
    probe = f"SELECT 1 FROM {plan.from_sql} WHERE {plan.where(plan.predicate)}"
    sites = find_call_sites([parse_sql(probe)[0].stmt], models)
    if len({(s.model, s.args) for s in sites}) != 1 or sites[0].depth != 0:
        raise PlanError(
            FEATURE_NOT_SUPPORTED,
            "the model predicate of an approximate selection must call exactly one model, once",
            hint="an ERROR TARGET aggregate may use several models",
        )
    plan.site = sites[0]
    plan.models = [sites[0].model]
    if plan.kind == "limit":
        plan.limit = _limit_count(plan.stmt)


def _limit_count(stmt: ast.SelectStmt) -> int:
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
    return k


def _constant_count(node, what: str) -> int:
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer) and node.val.ival >= 0:
        return int(node.val.ival)
    if isinstance(node, ast.A_Const) and node.isnull:
        raise PlanError(FEATURE_NOT_SUPPORTED, f"a proxy-ordered LIMIT needs a count ({what} ALL/NULL given)")
    raise PlanError(
        FEATURE_NOT_SUPPORTED, f"a proxy-ordered LIMIT needs {what} to be a non-negative integer constant"
    )


# -- aggregates ----------------------------------------------------------------------------------


def _aggregate_shape(plan: ApproxPlan, models: set[str], hidden: frozenset) -> None:
    stmt = plan.stmt
    if stmt.havingClause is not None or stmt.windowClause or stmt.distinctClause:
        raise PlanError(FEATURE_NOT_SUPPORTED, "ERROR TARGET queries support no HAVING, DISTINCT or windows")
    if stmt.sortClause or stmt.limitCount is not None or stmt.limitOffset is not None:
        raise PlanError(
            FEATURE_NOT_SUPPORTED,
            "ERROR TARGET queries support no ORDER BY/LIMIT: every group is estimated",
            hint="sort the estimates in an outer query over a CTE of the exact shape, or drop ORDER BY",
        )
    groups = list(stmt.groupClause or ())
    for g in groups:
        if isinstance(g, ast.A_Const) and isinstance(g.val, ast.Integer):
            raise PlanError(
                FEATURE_NOT_SUPPORTED,
                "ERROR TARGET queries GROUP BY expressions, not select-list positions",
                hint="repeat the expression in GROUP BY",
            )
    plan.groups = [render(g) for g in groups]
    plan.groups_read_models = any(mentions_model(g, models, hidden) for g in groups)
    for target in stmt.targetList:
        plan.outputs.append(_output(plan, target, models, hidden))
    if not plan.aggregates:
        raise PlanError(
            FEATURE_NOT_SUPPORTED, "an ERROR TARGET query needs COUNT, SUM or AVG in its select list"
        )


def _output(plan: ApproxPlan, target: ast.ResTarget, models: set[str], hidden: frozenset) -> Output:
    val = target.val
    text = render(val)
    if text in plan.groups:
        name = target.name or (val.fields[-1].sval if isinstance(val, ast.ColumnRef) else "?column?")
        return Output(name, group=plan.groups.index(text))
    if isinstance(val, ast.FuncCall) and [n.sval for n in val.funcname][-1].lower() in _AGGREGATES:
        kind = val.funcname[-1].sval.lower()
        if val.agg_distinct or val.agg_filter is not None or val.agg_order or val.over is not None:
            raise PlanError(
                FEATURE_NOT_SUPPORTED,
                f"ERROR TARGET estimates plain {kind.upper()}; not {text} (DISTINCT, FILTER, ORDER BY "
                "or OVER)",
            )
        if kind == "count" and val.agg_star:
            plan.aggregates.append(Aggregate(target.name or "count", "count", None, False))
            return Output(target.name or "count", aggregate=len(plan.aggregates) - 1)
        if val.args and len(val.args) == 1:
            value = render(val.args[0])
            reads = mentions_model(val.args[0], models, hidden)
            plan.aggregates.append(Aggregate(target.name or kind, kind, value, reads))
            return Output(target.name or kind, aggregate=len(plan.aggregates) - 1)
    raise PlanError(
        FEATURE_NOT_SUPPORTED,
        f"ERROR TARGET queries may select COUNT(*), COUNT(x), SUM(x), AVG(x) and GROUP BY expressions, "
        f"not {text}",
        hint="compute other expressions over the estimates in an outer query",
    )
