"""ORDER BY and LIMIT as the planner reads them: the first sort key, its direction and NULLs
placement, and constant LIMIT/OFFSET values (bound parameters included)."""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast
from pglast.enums import SortByDir, SortByNulls

from planner.install import quote_ident
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


def column_of(key, name: str | None, sole: bool = True) -> str | None:
    """The column of the FROM item called ``name`` that ``key`` reads (an unqualified name
    only when the item is its level's sole one), or None."""
    if not isinstance(key, ast.ColumnRef):
        return None
    fields = column_fields(key)
    if len(fields) == 2 and fields[0] == name:
        return fields[1]
    if len(fields) == 1 and sole:
        return fields[0]
    return None


def bounded(key: str, value: str, order: OrderKey) -> str:
    """``key`` up to ``value`` in ``order`` (ties included), NULL keys too where they sort first."""
    nulls = f"{key} IS NULL" if order.nulls_first else "false"
    return f"{key} {'>=' if order.descending else '<='} {value} OR {nulls}"


def nth_key_sql(source: str, alias: str, order: OrderKey, filters: list[str], rows: int, typed: bool) -> str:
    """The ORDER BY key of the ``rows``-th row of table ``source`` (read as ``alias``, with its
    ``filters``) in ``order``; ``typed``: as text, with its type's name beside it."""
    key = f"{quote_ident(alias)}.{quote_ident(order.column)}"
    shown = f"{key}::text, pg_catalog.pg_typeof({key})::text" if typed else key
    where = f" WHERE {' AND '.join(filters)}" if filters else ""
    direction = ("DESC" if order.descending else "ASC") + (
        " NULLS FIRST" if order.nulls_first else " NULLS LAST"
    )
    return (
        f"SELECT {shown} FROM {source} AS {quote_ident(alias)}{where} "
        f"ORDER BY {key} {direction} OFFSET {rows - 1} LIMIT 1"
    )


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
