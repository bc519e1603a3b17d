"""Pass: drop the model columns of a FROM subquery that the statement never reads.

``SELECT id FROM digit_predictions WHERE digit = 7`` reads one of the view's two model columns:
the other one's call site disappears, so its model never runs (Postgres, too, never evaluates
an output column nobody reads). Only columns whose expression calls a model and nothing that
could change the row count (a set-returning function) are dropped; a column counts as read
when anything outside the subquery names it, qualified or not, or reads the whole row.
"""

from __future__ import annotations

from pglast import ast

from planner.rewrite.ast_util import column_fields, model_name, nodes_in, walk

# Scalar functions that may wrap a model output in a prunable column (never set-returning).
SCALAR_FUNCTIONS = frozenset(
    {"round", "abs", "lower", "upper", "trunc", "floor", "ceil", "greatest", "least", "length", "concat"}
)


def prune_columns(stmt: ast.Node, models: set[str], table_models: set[str]) -> ast.Node:
    changed = True
    while changed:
        changed = False
        for sub in _subqueries(stmt):
            if _prune(stmt, sub, models, table_models):
                changed = True
    return stmt


def _subqueries(stmt: ast.Node) -> list[ast.RangeSubselect]:
    return [n for n in walk(stmt) if isinstance(n, ast.RangeSubselect) and n.alias is not None]


def _prune(stmt: ast.Node, sub: ast.RangeSubselect, models: set[str], table_models: set[str]) -> bool:
    query = sub.subquery
    if not _prunable_query(query):
        return False
    used = _names_read_outside(stmt, sub)
    if used is None:
        return False  # the whole row is read
    kept = []
    for target in query.targetList:
        name = _target_name(target)
        droppable = name is not None and name not in used and _droppable(target.val, models, table_models)
        if not droppable:
            kept.append(target)
    if len(kept) == len(query.targetList) or not kept:
        return False
    if sub.alias.colnames:  # column aliases are positional: dropping one would shift the others
        return False
    query.targetList = tuple(kept)
    return True


def _prunable_query(query) -> bool:
    if not isinstance(query, ast.SelectStmt) or query.op.name != "SETOP_NONE" or query.distinctClause:
        return False
    ordering = [s.node for s in query.sortClause or ()] + list(query.groupClause or ())
    # ORDER BY 2 / GROUP BY name may point at an output column
    return not any(isinstance(o, ast.A_Const | ast.ColumnRef) for o in ordering)


def _target_name(target: ast.ResTarget) -> str | None:
    if target.name is not None:
        return target.name
    if isinstance(target.val, ast.ColumnRef):
        return column_fields(target.val)[-1]
    if isinstance(target.val, ast.FuncCall):
        return target.val.funcname[-1].sval
    return None


def _droppable(expr: ast.Node, models: set[str], table_models: set[str]) -> bool:
    calls_model = False
    for node in walk(expr):
        if isinstance(node, ast.FuncCall):
            name = model_name(node, models)
            if name in table_models:
                return False
            if name is not None:
                calls_model = True
            elif node.funcname[-1].sval.lower() not in SCALAR_FUNCTIONS:
                return False
        elif isinstance(node, ast.SubLink):
            return False
    return calls_model


def _names_read_outside(stmt: ast.Node, sub: ast.RangeSubselect) -> set[str] | None:
    """Column names read outside ``sub``; None when something reads all of its columns. A name
    counts when qualified by the subquery's alias, or unqualified inside the level whose FROM
    holds the subquery (or a level nested in it: a correlated reference)."""
    alias = sub.alias.aliasname
    used: set[str] = set()
    for node, levels in _outside(stmt, sub, ()):
        in_scope = any(_in_from(level, sub) for level in levels)
        if isinstance(node, ast.ColumnRef):
            fields = column_fields(node)
            if fields[-1] is None and (len(fields) == 1 or fields[-2] == alias):
                if len(fields) > 1 or (levels and _in_from(levels[-1], sub)):
                    return None  # * or alias.*
            elif len(fields) == 1 and fields[0] == alias and in_scope:
                return None  # the whole row as a value
            elif (len(fields) == 1 and in_scope) or (len(fields) > 1 and fields[-2] == alias):
                used.add(fields[-1])
        elif isinstance(node, ast.JoinExpr):
            if node.isNatural and sub in (node.larg, node.rarg):
                return None
            used.update(n.sval for n in node.usingClause or ())
    return used


def _outside(node: ast.Node, sub: ast.RangeSubselect, levels: tuple):
    """(node, the SELECT levels around it, innermost last) for every node outside ``sub``'s
    own query."""
    outer = levels
    if isinstance(node, ast.SelectStmt):
        levels = (*levels, node)
    yield node, levels
    for name in node.__slots__:
        # a WITH clause's queries cannot see the FROM items of the statement they belong to
        scope = outer if name == "withClause" else levels
        for child in nodes_in(getattr(node, name, None)):
            if child is not sub.subquery:
                yield from _outside(child, sub, scope)


def _in_from(level, sub: ast.RangeSubselect) -> bool:
    if not isinstance(level, ast.SelectStmt):
        return False
    stack = list(level.fromClause or ())
    while stack:
        item = stack.pop()
        if item is sub:
            return True
        if isinstance(item, ast.JoinExpr) and item.jointype is not None:
            stack += [item.larg, item.rarg]
    return False
