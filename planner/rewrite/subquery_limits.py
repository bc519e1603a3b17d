"""Pass: a subquery that takes the first k rows of a table in order reads only those rows.

``(SELECT frame, light FROM frame_stats ORDER BY frame LIMIT 10) t`` keeps the first ten
frames: the pass adds, at the frames scan, ``f.frame <= b OR b IS NULL`` where ``b`` is
``(SELECT f.frame FROM frames f ORDER BY f.frame OFFSET 9 LIMIT 1)``, the tenth key. Every row
the subquery's LIMIT can return has a key up to ``b`` (ties included, so Postgres picks among
the same rows), hence the answer is the same, and the models under the subquery run for ten
frames. Only a chain of plain subqueries, one FROM item each, down to the table applies (each
table row is one subquery row); its conditions must read that table alone.
"""

from __future__ import annotations

from pglast import ast

from planner.install import quote_ident
from planner.rewrite.ast_util import (
    add_conjuncts,
    conjuncts,
    has_aggregates,
    is_plain_select,
    mentions_model,
    output_columns,
    parse_condition,
    render,
    walk,
)
from planner.rewrite.join_keys import reads_only
from planner.rewrite.ordering import bounded, column_of, constant, nth_key_sql, order_of, sort_key
from planner.rewrite.prune_columns import SCALAR_FUNCTIONS


def subquery_limits(stmt: ast.Node, models: set[str], table_models: set[str]) -> ast.Node:
    scalar = models - table_models
    for node in list(walk(stmt)):
        if isinstance(node, ast.RangeSubselect) and isinstance(node.subquery, ast.SelectStmt):
            _bound(node.subquery, models, scalar)
    return stmt


def _bound(query: ast.SelectStmt, models: set[str], scalar: set[str]) -> None:
    if not _ordered_limit(query):
        return
    rows = constant(query.limitCount) + (constant(query.limitOffset) if query.limitOffset is not None else 0)
    found = _one_to_one(query, sort_key(query), models, scalar)
    if found is None or rows < 1:
        return
    level, table, column = found
    order = order_of(query.sortClause[0], column)
    if order is None:
        return
    alias = table.alias.aliasname if table.alias is not None else table.relname
    key = f"{quote_ident(alias)}.{quote_ident(column)}"
    filters = [render(c) for c in conjuncts(level.whereClause)]
    named = ast.RangeVar(relname=table.relname, schemaname=table.schemaname, inh=True, relpersistence="p")
    bound = f"({nth_key_sql(render(named), alias, order, filters, rows, typed=False)})"
    add_conjuncts(level, [parse_condition(f"({bounded(key, bound, order)} OR {bound} IS NULL)")])


def _ordered_limit(query: ast.SelectStmt) -> bool:
    if query.op.name != "SETOP_NONE" or not query.sortClause or query.limitCount is None:
        return False
    if constant(query.limitCount) is None or (
        query.limitOffset is not None and constant(query.limitOffset) is None
    ):
        return False
    if query.groupClause or query.distinctClause or query.havingClause or query.windowClause:
        return False
    return not has_aggregates(query.targetList or ()) and query.withClause is None


def _one_to_one(query: ast.SelectStmt, key, models: set[str], scalar: set[str]):
    """(level, table, column of ``key``) when every row of ``table`` passing the conditions at
    its level is one row of ``query`` (plain subqueries with one FROM item each, down to it)."""
    level = query
    while True:
        if not level.fromClause or len(level.fromClause) != 1 or not isinstance(key, ast.ColumnRef):
            return None
        item = level.fromClause[0]
        name = getattr(getattr(item, "alias", None), "aliasname", None)
        column = column_of(key, name or getattr(item, "relname", None))
        if isinstance(item, ast.RangeVar):
            ok = column is not None and item.inh is not False and _one_row_each(level, scalar)
            alias = name or item.relname
            plain = all(
                reads_only(c, {alias}) and not mentions_model(c, models) for c in conjuncts(level.whereClause)
            )
            return (level, item, column) if ok and plain else None
        if not isinstance(item, ast.RangeSubselect) or item.lateral or column is None:
            return None
        inner = item.subquery
        # a condition between the table and the LIMIT drops rows, a set-returning call adds some
        if level.whereClause is not None or not _one_row_each(level, scalar):
            return None
        if not is_plain_select(inner):
            return None
        key = output_columns(inner).get(column)
        level = inner


def _one_row_each(level: ast.SelectStmt, scalar: set[str]) -> bool:
    """No call in the level's select list that may return other than one row (only scalar
    models and well-known scalar functions)."""
    calls = (n for target in level.targetList or () for n in walk(target) if isinstance(n, ast.FuncCall))
    return all(
        c.funcname[-1].sval in scalar or c.funcname[-1].sval.lower() in SCALAR_FUNCTIONS for c in calls
    )
