"""Putting a prepared statement's bound values in place of ``$n`` before planning its inputs."""

from __future__ import annotations

from typing import Protocol

from pglast import ast, parse_sql

from planner.outcome import PlanError

CHARACTER_NOT_IN_REPERTOIRE = "22021"


class BoundValue(Protocol):
    text: str | None
    type_name: str | None


def literal(value: BoundValue) -> ast.Node:
    if value.text is not None and "\x00" in value.text:
        # Postgres refuses NUL in text values before any statement runs; so does SieveDB
        raise PlanError(CHARACTER_NOT_IN_REPERTOIRE, 'invalid byte sequence for encoding "UTF8": 0x00')
    if value.text is None:
        sql = "NULL" if value.type_name is None else f"NULL::{value.type_name}"
    else:
        quoted = "'" + value.text.replace("'", "''") + "'"
        sql = quoted if value.type_name is None else f"{quoted}::{value.type_name}"
    return parse_sql(f"SELECT {sql}")[0].stmt.targetList[0].val


def bind_params(node: ast.Node, values: list[BoundValue | None]) -> ast.Node:
    """Replace ParamRefs whose value is known; unknown ones stay (and are not pushed down)."""
    for name in node.__slots__:
        current = getattr(node, name, None)
        replaced = _replace(current, values)
        if replaced is not current:
            setattr(node, name, replaced)
    return node


def _replace(value, values):
    if isinstance(value, ast.ParamRef):
        index = value.number - 1
        if 0 <= index < len(values) and values[index] is not None:
            return literal(values[index])
        return value
    if isinstance(value, ast.Node):
        bind_params(value, values)
        return value
    if isinstance(value, tuple):
        items = tuple(_replace(v, values) for v in value)
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value
