"""Pass: move WHERE conditions down into FROM subqueries, top-down through any depth of views.

A conjunct that reads only model-free columns of a subquery (or a model-free condition it
implies, see implied.py) is rewritten in the subquery's own terms and added to its WHERE; the
subquery's level then pushes it on into its own subqueries. ``SELECT * FROM colors WHERE frame
= 270`` thus narrows the detector's inputs two views down to one frame. Only plain subqueries on
the inner side of joins receive conditions (an outer join's null-extended rows, grouping,
DISTINCT or LIMIT would change what the condition means), and nothing volatile moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pglast import ast
from pglast.enums import JoinType

from planner.rewrite.ast_util import (
    add_conjuncts,
    children,
    column_fields,
    conjuncts,
    copy_node,
    is_plain_select,
    mentions_model,
    output_columns,
    render,
    walk,
)
from planner.rewrite.implied import implied_condition, narrowing_conjuncts

# Functions whose every call may answer differently: evaluating them twice changes the rows.
VOLATILE = frozenset(
    {
        "random",
        "random_normal",
        "setseed",
        "nextval",
        "setval",
        "currval",
        "lastval",
        "clock_timestamp",
        "timeofday",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "pg_sleep",
        "txid_current",
        "pg_current_xact_id",
    }
)


@dataclass(frozen=True)
class PushContext:
    models: set[str]
    uncorrelated: frozenset[str] = field(default_factory=frozenset)  # subqueries (SQL) reading nothing around


def push_down(stmt: ast.Node, ctx: PushContext) -> ast.Node:
    if isinstance(stmt, ast.SelectStmt) and stmt.whereClause is not None and stmt.fromClause:
        _push_level(stmt, ctx)
    for child in children(stmt):
        push_down(child, ctx)
    return stmt


def is_volatile(node: ast.Node) -> bool:
    return any(isinstance(n, ast.FuncCall) and n.funcname[-1].sval.lower() in VOLATILE for n in walk(node))


def movable(node: ast.Node, ctx: PushContext) -> bool:
    """True when ``node`` may be evaluated elsewhere than where it was written: nothing volatile,
    and every subquery in it known to read nothing of the statement around it."""
    if is_volatile(node):
        return False
    return all(render(n.subselect) in ctx.uncorrelated for n in walk(node) if isinstance(n, ast.SubLink))


def _push_level(level: ast.SelectStmt, ctx: PushContext) -> None:
    candidates = narrowing_conjuncts(conjuncts(level.whereClause), ctx.models)
    candidates = [c for c in candidates if movable(c, ctx)]
    if not candidates:
        return
    candidates += transferred(candidates, equalities(level))
    sole = len(level.fromClause) == 1 and isinstance(level.fromClause[0], ast.RangeSubselect)
    for sub in [s for item in level.fromClause for s in _inner_subqueries(item)]:
        alias = sub.alias.aliasname if sub.alias else None
        columns = output_columns(sub.subquery)
        hidden = model_function_aliases(sub.subquery.fromClause or (), ctx.models)
        pushed = []
        for conjunct in candidates:
            rewritten = _rewrite(conjunct, alias, sole, columns)
            if rewritten is None:
                continue
            if not mentions_model(rewritten, ctx.models):
                pushed.append(rewritten)
            # What it implies without the subquery's model columns (and without a model
            # function's rows, so that the other items are filtered before the function runs)
            if mentions_model(rewritten, ctx.models, hidden):
                implied = implied_condition(rewritten, ctx.models, hidden)
                if implied is not None:
                    pushed.append(implied)
        if pushed:
            add_conjuncts(sub.subquery, pushed)


def model_function_aliases(items, models: set[str]) -> set[str]:
    """Names under which ``FROM model(x) AS s`` rows are read in these FROM items."""
    names = set()
    for item in items:
        for node in walk(item):
            if isinstance(node, ast.RangeFunction) and mentions_model(node, models):
                if node.alias is not None:
                    names.add(node.alias.aliasname)
                else:
                    names.update(
                        p.funcname[-1].sval for f in node.functions for p in f if isinstance(p, ast.FuncCall)
                    )
    return names


def equalities(level: ast.SelectStmt) -> list[tuple[ast.ColumnRef, ast.ColumnRef]]:
    """``a.x = b.y`` pairs that hold on every row of the level: WHERE conjuncts and the
    conditions of its inner joins."""
    found = []
    conditions = conjuncts(level.whereClause)
    stack = list(level.fromClause or ())
    while stack:
        item = stack.pop()
        if isinstance(item, ast.JoinExpr) and item.jointype == JoinType.JOIN_INNER:
            conditions += conjuncts(item.quals)
            stack += [item.larg, item.rarg]
    for condition in conditions:
        if (
            isinstance(condition, ast.A_Expr)
            and condition.kind.name == "AEXPR_OP"
            and [n.sval for n in condition.name] == ["="]
            and isinstance(condition.lexpr, ast.ColumnRef)
            and isinstance(condition.rexpr, ast.ColumnRef)
        ):
            found.append((condition.lexpr, condition.rexpr))
    return found


def transferred(candidates: list, pairs: list) -> list:
    """Copies of single-column conditions with the column replaced by one it equals:
    ``o.frame BETWEEN 5 AND 9`` and ``o.frame = s.frame`` give ``s.frame BETWEEN 5 AND 9``."""
    out = []
    for condition in candidates:
        refs = {tuple(column_fields(n)) for n in walk(condition) if isinstance(n, ast.ColumnRef)}
        if len(refs) != 1 or any(isinstance(n, ast.SubLink) for n in walk(condition)):
            continue
        (only,) = refs
        for left, right in pairs:
            for this, other in ((left, right), (right, left)):
                if tuple(column_fields(this)) == only and tuple(column_fields(other)) != only:
                    out.append(_replace_column(condition, only, other))
    return out


def _replace_column(node, fields: tuple, replacement: ast.ColumnRef):
    if isinstance(node, ast.ColumnRef):
        return replacement if tuple(column_fields(node)) == fields else node
    return _mapped(node, lambda child: _replace_column(child, fields, replacement))


def _inner_subqueries(item: ast.Node) -> list[ast.RangeSubselect]:
    """Subqueries in FROM whose rows all reach the level's WHERE (not behind an outer join)."""
    if isinstance(item, ast.RangeSubselect):
        simple = is_plain_select(item.subquery) and not item.alias.colnames if item.alias else False
        return [item] if simple else []
    if isinstance(item, ast.JoinExpr) and item.jointype == JoinType.JOIN_INNER:
        return _inner_subqueries(item.larg) + _inner_subqueries(item.rarg)
    if isinstance(item, ast.JoinExpr) and item.jointype == JoinType.JOIN_LEFT:
        return _inner_subqueries(item.larg)  # WHERE drops the left side's rows it rejects
    if isinstance(item, ast.JoinExpr) and item.jointype == JoinType.JOIN_RIGHT:
        return _inner_subqueries(item.rarg)
    return []


class _NotPushable(Exception):
    pass


def _rewrite(conjunct: ast.Node, alias: str | None, sole: bool, columns: dict[str, ast.Node]):
    """The conjunct in terms of the subquery's own columns, or None when it reads anything else."""
    try:
        return _substitute(conjunct, alias, sole, columns)
    except _NotPushable:
        return None


def _substitute(node, alias, sole, columns):
    if isinstance(node, ast.ColumnRef):
        fields = column_fields(node)
        if len(fields) == 2 and fields[0] == alias and fields[1] in columns:
            return copy_node(columns[fields[1]])
        if len(fields) == 1 and sole and fields[0] in columns:
            return copy_node(columns[fields[0]])
        raise _NotPushable
    if isinstance(node, ast.SubLink):
        if node.testexpr is None:
            return node  # EXISTS / scalar subquery already known to read nothing outside
        return _copy_with(node, {"testexpr": _substitute(node.testexpr, alias, sole, columns)})
    if isinstance(node, ast.ParamRef):
        raise _NotPushable
    return _mapped(node, lambda child: _substitute(child, alias, sole, columns))


def _mapped(node, change):
    """A copy of ``node`` with ``change`` applied to each child node (in tuples too)."""
    if not isinstance(node, ast.Node):
        return node
    changes = {}
    for name in node.__slots__:
        value = getattr(node, name, None)
        if isinstance(value, ast.Node):
            changes[name] = change(value)
        elif isinstance(value, tuple):
            changes[name] = tuple(change(v) for v in value)
    return _copy_with(node, changes)


def _copy_with(node: ast.Node, changes: dict) -> ast.Node:
    copy = type(node)()
    for name in node.__slots__:
        setattr(copy, name, changes.get(name, getattr(node, name, None)))
    return copy
