"""Pass: replace each reference to a model view by its definition, as a subquery.

``FROM digit_predictions p`` becomes ``FROM (SELECT d.id, digit_oracle(d.pixels) AS digit FROM
digits d) AS p``: the model calls inside the view become call sites of the statement. A name
that a WITH clause in scope defines is that CTE, never the view; a view's body is inlined with
no CTE in scope (its names were bound when it was created).
"""

from __future__ import annotations

from pglast import ast, parse_sql

from planner.rewrite.ast_util import DEFINITIONS

MAX_DEPTH = 16  # views over views: deeper nesting is left to Postgres


def inline_views(stmt: ast.Node, views: dict[str, str]) -> ast.Node:
    if views:
        _inline(stmt, views, frozenset(), 0)
    return stmt


def _inline(node: ast.Node, views: dict[str, str], ctes: frozenset, depth: int) -> None:
    if depth > MAX_DEPTH or isinstance(node, DEFINITIONS):
        return
    if isinstance(node, ast.SelectStmt | ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
        with_clause = getattr(node, "withClause", None)
        if with_clause is not None:
            ctes = ctes | {cte.ctename for cte in with_clause.ctes}
    for name in node.__slots__:
        if name == "relation":  # the target table of INSERT/UPDATE/DELETE/ALTER, not a read
            continue
        value = getattr(node, name, None)
        replaced = _value(value, views, ctes, depth)
        if replaced is not value:
            setattr(node, name, replaced)


def _value(value, views: dict[str, str], ctes: frozenset, depth: int):
    if isinstance(value, ast.RangeVar):
        name = view_name(value, ctes)
        if name in views:
            return _subquery(value, views, name, depth)
        return value
    if isinstance(value, ast.Node):
        _inline(value, views, ctes, depth)
        return value
    if isinstance(value, tuple):
        items = tuple(_value(v, views, ctes, depth) for v in value)
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


def _subquery(ref: ast.RangeVar, views: dict[str, str], name: str, depth: int) -> ast.RangeSubselect:
    body = parse_sql(views[name])[0].stmt
    _inline(body, views, frozenset(), depth + 1)
    alias = ref.alias or ast.Alias(aliasname=ref.relname)
    return ast.RangeSubselect(lateral=False, subquery=body, alias=alias)


def view_name(ref: ast.RangeVar, ctes: frozenset = frozenset()) -> str | None:
    """The public view ``ref`` may name; None for other schemas and for CTE names in scope."""
    if ref.catalogname is not None or ref.schemaname not in (None, "public"):
        return None
    if ref.schemaname is None and ref.relname in ctes:
        return None
    return ref.relname
