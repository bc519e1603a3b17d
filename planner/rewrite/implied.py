"""Model-free conditions implied by a WHERE conjunct that calls a model.

``a OR (model(x) = 7 AND b)`` holds only on rows where ``a OR b`` holds, so the model's inputs
may be narrowed by ``a OR b`` although the conjunct itself names a model. The relaxation is
monotone: a row that makes the conjunct true makes the relaxation true (NULL and false rows are
dropped by WHERE either way), so the inputs it keeps are always a superset of those needed.
"""

from __future__ import annotations

from pglast import ast
from pglast.enums import BoolExprType

from planner.rewrite.ast_util import mentions_model


def implied_condition(
    node: ast.Node,
    models: set[str],
    hidden: frozenset | set = frozenset(),
    ready: frozenset | set = frozenset(),
):
    """The strongest model-free condition this procedure finds that ``node`` implies, or None
    when it implies nothing useful (only "true"). ``ready``: see ast_util.mentions_model."""
    if not mentions_model(node, models, hidden, ready):
        return node
    if not isinstance(node, ast.BoolExpr):
        return None
    parts = [implied_condition(arg, models, hidden, ready) for arg in node.args]
    if node.boolop == BoolExprType.AND_EXPR:
        kept = [p for p in parts if p is not None]
        if not kept:
            return None
        return kept[0] if len(kept) == 1 else ast.BoolExpr(boolop=BoolExprType.AND_EXPR, args=tuple(kept))
    if node.boolop == BoolExprType.OR_EXPR:
        if any(p is None for p in parts):
            return None  # one branch may hold on any row: nothing is implied
        return ast.BoolExpr(boolop=BoolExprType.OR_EXPR, args=tuple(parts))
    return None  # NOT: the negation of a relaxation is not implied


def narrowing_conjuncts(
    conjuncts: list,
    models: set[str],
    hidden: frozenset | set = frozenset(),
    ready: frozenset | set = frozenset(),
) -> list:
    """The model-free conjuncts, and the model-free conditions implied by the others."""
    out = []
    for conjunct in conjuncts:
        implied = implied_condition(conjunct, models, hidden, ready)
        if implied is not None:
            out.append(implied)
    return out
