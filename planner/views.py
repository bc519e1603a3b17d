"""Views over model functions: inline them, then push outer predicates into them.

A query over ``digit_predictions`` reaches the model through the view's SELECT. Inlining the view
as a subquery exposes the call site; pushing the outer WHERE conjuncts that touch only
model-free view columns into the subquery keeps the input set as small as the query allows
(``WHERE id < 100`` runs the model for at most 100 rows).
"""

from __future__ import annotations

from pglast import ast, parse_sql
from pglast.enums import BoolExprType, JoinType

from planner.calls import conjuncts, mentions_model, nodes_in

MAX_DEPTH = 16
_NOT_QUERIES = (ast.ViewStmt, ast.CreateFunctionStmt, ast.DropStmt, ast.RenameStmt, ast.AlterTableStmt)
_AGGREGATES = {
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "stddev",
    "variance",
    "json_agg",
    "jsonb_agg",
    "percentile_cont",
    "percentile_disc",
}


def inline_views(node: ast.Node, views: dict[str, str], depth: int = 0) -> ast.Node:
    """Replace references to model views (RangeVar) by their definitions, recursively."""
    if depth > MAX_DEPTH or isinstance(node, _NOT_QUERIES):
        return node
    for name in node.__slots__:
        if name == "relation":  # the target table of INSERT/UPDATE/DELETE/ALTER, not a read
            continue
        value = getattr(node, name, None)
        replaced = _inline_value(value, views, depth)
        if replaced is not value:
            setattr(node, name, replaced)
    return node


def _inline_value(value, views: dict[str, str], depth: int):
    if isinstance(value, ast.RangeVar) and _view_name(value) in views:
        subquery = parse_sql(views[_view_name(value)])[0].stmt
        inline_views(subquery, views, depth + 1)
        alias = value.alias or ast.Alias(aliasname=value.relname)
        return ast.RangeSubselect(lateral=False, subquery=subquery, alias=alias)
    if isinstance(value, ast.Node):
        inline_views(value, views, depth)
        return value
    if isinstance(value, tuple):
        items = tuple(_inline_value(v, views, depth) for v in value)
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


def _view_name(rv: ast.RangeVar) -> str | None:
    if rv.schemaname not in (None, "public"):
        return None
    return rv.relname


def push_down(node: ast.Node, models: set[str]) -> None:
    """Move outer conjuncts into simple subqueries in FROM, wherever they only read model-free
    columns of that subquery. Walks the whole tree."""
    for child in nodes_in([getattr(node, n, None) for n in node.__slots__]):
        push_down(child, models)
    if isinstance(node, ast.SelectStmt) and node.whereClause is not None and node.fromClause:
        _push_level(node, models)


def _inner_subqueries(item: ast.Node) -> list[ast.RangeSubselect]:
    """Subqueries in FROM whose rows all reach the level's WHERE (not behind an outer join)."""
    if isinstance(item, ast.RangeSubselect):
        return [item] if _simple(item.subquery) else []
    if isinstance(item, ast.JoinExpr) and item.jointype == JoinType.JOIN_INNER:
        return _inner_subqueries(item.larg) + _inner_subqueries(item.rarg)
    return []


def _push_level(level: ast.SelectStmt, models: set[str]) -> None:
    subqueries = [s for item in level.fromClause for s in _inner_subqueries(item)]
    for sub in subqueries:
        alias = sub.alias.aliasname if sub.alias else None
        sole = len(level.fromClause) == 1
        columns = _output_columns(sub.subquery)
        pushed = []
        for conjunct in conjuncts(level.whereClause):
            rewritten = _rewrite(conjunct, alias, sole, columns)
            if rewritten is not None and not mentions_model(rewritten, models):
                pushed.append(rewritten)
        if pushed:
            _and_into(sub.subquery, pushed)


def _simple(select: ast.SelectStmt) -> bool:
    if not isinstance(select, ast.SelectStmt) or select.op is None:
        return False
    if select.op.name != "SETOP_NONE":
        return False
    if select.groupClause or select.havingClause or select.distinctClause or select.limitCount:
        return False
    if select.limitOffset or select.windowClause:
        return False
    return not has_aggregates(select.targetList or ())


def has_aggregates(targets) -> bool:
    return any(_aggregate_or_window(t) for t in targets)


def _aggregate_or_window(node: ast.Node) -> bool:
    if isinstance(node, ast.FuncCall):
        if node.over is not None or node.agg_star or node.agg_distinct:
            return True
        if node.funcname[-1].sval.lower() in _AGGREGATES:
            return True
    return any(_aggregate_or_window(c) for c in nodes_in([getattr(node, n, None) for n in node.__slots__]))


def _output_columns(select: ast.SelectStmt) -> dict[str, ast.Node]:
    columns = {}
    for target in select.targetList or ():
        expr = target.val
        name = target.name
        if name is None and isinstance(expr, ast.ColumnRef) and isinstance(expr.fields[-1], ast.String):
            name = expr.fields[-1].sval
        if name is not None:
            columns[name] = expr
    return columns


def _rewrite(conjunct: ast.Node, alias: str | None, sole: bool, columns: dict[str, ast.Node]):
    """The conjunct in terms of the subquery's own columns, or None when it reads anything else."""
    try:
        return _substitute(conjunct, alias, sole, columns)
    except _NotPushable:
        return None


class _NotPushable(Exception):
    pass


def _substitute(node, alias, sole, columns):
    if isinstance(node, ast.ColumnRef):
        fields = [f.sval if isinstance(f, ast.String) else None for f in node.fields]
        if len(fields) == 2 and fields[0] == alias and fields[1] in columns:
            return columns[fields[1]]
        if len(fields) == 1 and sole and fields[0] in columns:
            return columns[fields[0]]
        raise _NotPushable
    if isinstance(node, ast.SubLink | ast.ParamRef):
        raise _NotPushable  # may read other relations or unknown values
    if not isinstance(node, ast.Node):
        return node
    changes = {}
    for name in node.__slots__:
        value = getattr(node, name, None)
        if isinstance(value, ast.Node):
            changes[name] = _substitute(value, alias, sole, columns)
        elif isinstance(value, tuple):
            changes[name] = tuple(_substitute(v, alias, sole, columns) for v in value)
    copy = type(node)()
    for name in node.__slots__:
        setattr(copy, name, changes.get(name, getattr(node, name, None)))
    return copy


def _and_into(select: ast.SelectStmt, pushed: list[ast.Node]) -> None:
    parts = ([select.whereClause] if select.whereClause is not None else []) + pushed
    select.whereClause = (
        parts[0] if len(parts) == 1 else ast.BoolExpr(boolop=BoolExprType.AND_EXPR, args=tuple(parts))
    )
