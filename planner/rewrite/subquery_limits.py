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

from planner.rewrite.ast_util import (
    add_conjuncts,
    conjuncts,
    has_aggregates,
    mentions_model,
    output_columns,
    parse_condition,
    render,
    walk,
)
from planner.rewrite.join_keys import reads_only
from planner.rewrite.ordering import constant, order_of, quote, sort_key
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
    key = f"{quote(alias)}.{quote(column)}"
    filters = [render(c) for c in conjuncts(level.whereClause)]
    where = f" WHERE {' AND '.join(filters)}" if filters else ""
    direction = ("DESC" if order.descending else "ASC") + (
        " NULLS FIRST" if order.nulls_first else " NULLS LAST"
    )
    source = render(
        ast.RangeVar(relname=table.relname, schemaname=table.schemaname, inh=True, relpersistence="p")
    )
    bound = (
        f"(SELECT {key} FROM {source} AS {quote(alias)}{where} "
        f"ORDER BY {key} {direction} OFFSET {rows - 1} LIMIT 1)"
    )
    nulls = f" OR {key} IS NULL" if order.nulls_first else ""
    add_conjuncts(
        level,
        [parse_condition(f"({key} {'>=' if order.descending else '<='} {bound} OR {bound} IS NULL{nulls})")],
    )


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
        column = _column(key, name or getattr(item, "relname", None))
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
        if level.whereClause is not None or not _one_row_each(level, scalar):
            return (
                None  # a condition between the table and the LIMIT drops rows, a set-returning call adds some
            )
        if not _plain_chain_level(inner):
            return None
        key = output_columns(inner).get(column)
        level = inner


def _one_row_each(level: ast.SelectStmt, scalar: set[str]) -> bool:
    """No call in the level's select list that may return other than one row (only scalar
    models and well-known scalar functions)."""
    for node in walk(ast.SelectStmt(targetList=level.targetList)):
        if isinstance(node, ast.FuncCall):
            name = node.funcname[-1].sval
            if name not in scalar and name.lower() not in SCALAR_FUNCTIONS:
                return False
    return True


def _plain_chain_level(query) -> bool:
    if not isinstance(query, ast.SelectStmt) or query.op.name != "SETOP_NONE":
        return False
    if query.groupClause or query.distinctClause or query.havingClause or query.windowClause:
        return False
    if query.limitCount is not None or query.limitOffset is not None or query.withClause is not None:
        return False
    return not has_aggregates(query.targetList or ())


def _column(key: ast.ColumnRef, name: str | None) -> str | None:
    fields = [f.sval if isinstance(f, ast.String) else None for f in key.fields]
    if len(fields) == 2 and fields[0] == name:
        return fields[1]
    return fields[0] if len(fields) == 1 else None
