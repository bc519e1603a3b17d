"""ORDER BY and LIMIT as the planner reads them: the first sort key, its direction and NULLs
placement, and constant LIMIT/OFFSET values (bound parameters included)."""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast
from pglast.enums import SortByDir, SortByNulls

from planner.rewrite.ast_util import column_fields


@dataclass(frozen=True)
class OrderKey:
    """The driver column the statement's first ORDER BY key reads, and its direction."""

    column: str
    descending: bool
    nulls_first: bool


def sort_key(stmt: ast.SelectStmt):
    """The first ORDER BY expression, output column names and positions resolved."""
    if not stmt.sortClause:
        return None
    node = stmt.sortClause[0].node
    targets = list(stmt.targetList or ())
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer):
        index = node.val.ival - 1
        return targets[index].val if 0 <= index < len(targets) else None
    if isinstance(node, ast.ColumnRef) and len(node.fields) == 1:
        named = [t.val for t in targets if t.name == column_fields(node)[0]]
        if named:
            return named[0]
    return node


def order_of(sort: ast.SortBy, column: str) -> OrderKey | None:
    if sort.useOp is not None:
        return None
    descending = sort.sortby_dir == SortByDir.SORTBY_DESC
    if sort.sortby_nulls == SortByNulls.SORTBY_NULLS_DEFAULT:
        nulls_first = descending  # Postgres: NULLs sort as larger than any value
    else:
        nulls_first = sort.sortby_nulls == SortByNulls.SORTBY_NULLS_FIRST
    return OrderKey(column, descending, nulls_first)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def constant(node) -> int | None:
    """An integer LIMIT/OFFSET: a literal, or a bound parameter's value ('5'::int8)."""
    if isinstance(node, ast.TypeCast) and isinstance(node.arg, ast.A_Const):
        value = node.arg.val
        text = getattr(value, "sval", None) if isinstance(value, ast.String) else None
        if text is not None and text.strip().lstrip("-").isdigit():
            return int(text)
        node = node.arg
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer):
        return node.val.ival
    return None
