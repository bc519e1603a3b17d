"""Pass: a model view joined to a filtered table reads only the keys the table keeps.

``frames f JOIN frame_stats s ON s.frame = f.frame WHERE f.ts >= ...`` needs the per-frame
models only for frames whose ``ts`` passes: the pass adds ``(s.frame IN (SELECT f.frame FROM
frames f WHERE f.ts >= ...) OR false)``, which every row the statement keeps satisfies, so the
answer is the same, and push_down then carries it into the view, where it narrows the model's
inputs. The ``OR false`` keeps Postgres from turning it into a semi-join: a hashed subplan
filters the view's scan before any model call there (ast_util.pinned_in). The table side is a base table with
conditions of its own in WHERE, or a CTE (its body is the filter); the view side is a plain
subquery that calls a model, joined by an inner join, or the nullable side of an outer join
(the condition then goes into the join's ON).
"""

from __future__ import annotations

from pglast import ast
from pglast.enums import JoinType, SetOperation

from planner.rewrite.ast_util import (
    add_conjuncts,
    and_of,
    conjuncts,
    copy_node,
    is_plain_select,
    mentions_model,
    nodes_in,
    pinned_in,
    render,
)
from planner.rewrite.join_keys import alias_of, equal_pairs, named_items, reads_only, using_pairs


def semi_joins(stmt: ast.Node, models: set[str]) -> ast.Node:
    _visit(stmt, models, frozenset())
    return stmt


def _visit(node: ast.Node, models: set[str], ctes: frozenset) -> None:
    if isinstance(node, ast.SelectStmt):
        if node.withClause is not None:
            ctes = ctes | {c.ctename for c in node.withClause.ctes}
        if node.fromClause:
            _level(node, models, ctes)
    for name in node.__slots__:
        value = getattr(node, name, None)
        for child in nodes_in(value):
            _visit(child, models, ctes)


def _level(level: ast.SelectStmt, models: set[str], ctes: frozenset) -> None:
    items = named_items(level.fromClause)
    added: set[str] = set()
    for join, y_ref, x_ref in _key_pairs(level):
        table, view = items.get(alias_of(x_ref)), items.get(alias_of(y_ref))
        if not isinstance(table, ast.RangeVar) or not _model_view(view, models):
            continue
        condition = _semi_join(level, table, x_ref, y_ref, models, ctes)
        if condition is None or render(condition) in added:
            continue
        added.add(render(condition))
        if join is None:
            add_conjuncts(level, [condition])
        else:
            join.quals = and_of([*conjuncts(join.quals), condition])


def _key_pairs(level: ast.SelectStmt):
    """(join or None, view-side column, table-side column): equalities every kept row
    satisfies (WHERE, inner joins' ON), both ways round, and an outer join's ON equalities
    with the nullable side as the view side."""
    where = [(None, a, b) for a, b in _qualified_pairs(conjuncts(level.whereClause))]
    stack = list(level.fromClause)
    while stack:
        item = stack.pop()
        if not isinstance(item, ast.JoinExpr):
            continue
        stack += [item.larg, item.rarg]
        on = _qualified_pairs(conjuncts(item.quals)) + using_pairs(item)
        if item.jointype == JoinType.JOIN_INNER:
            where += [(None, a, b) for a, b in on]
        elif item.jointype in (JoinType.JOIN_LEFT, JoinType.JOIN_RIGHT):
            nullable = item.rarg if item.jointype == JoinType.JOIN_LEFT else item.larg
            name = getattr(getattr(nullable, "alias", None), "aliasname", None)
            where += [(item, a, b) for a, b in on if alias_of(a) == name and name is not None]
            where += [(item, b, a) for a, b in on if alias_of(b) == name and name is not None]
            continue
    both = []
    for join, a, b in where:
        both.append((join, a, b))
        if join is None:
            both.append((None, b, a))
    return both


def _semi_join(level, table: ast.RangeVar, x_ref, y_ref, models: set[str], ctes: frozenset):
    alias = table.alias.aliasname if table.alias is not None else table.relname
    own = [
        copy_node(c)
        for c in conjuncts(level.whereClause)
        if reads_only(c, {alias}) and not mentions_model(c, models)
    ]
    is_cte = table.schemaname is None and table.relname in ctes
    if not own and not is_cte:
        return None  # the whole table: nothing to narrow by
    source = copy_node(table)
    select = ast.SelectStmt(
        targetList=(ast.ResTarget(val=copy_node(x_ref)),),
        fromClause=(source,),
        whereClause=and_of(own),
        op=SetOperation.SETOP_NONE,
    )
    return pinned_in(copy_node(y_ref), select)


def _model_view(item, models: set[str]) -> bool:
    return (
        isinstance(item, ast.RangeSubselect)
        and item.alias is not None
        and not item.alias.colnames
        and is_plain_select(item.subquery)
        and mentions_model(item.subquery, models)
    )


def _qualified_pairs(conditions: list):
    return [(a, b) for a, b in equal_pairs(conditions) if alias_of(a) is not None and alias_of(b) is not None]
