"""What the passes read off joins: the names FROM items go by, and the column equalities that
hold on the rows a level keeps."""

from __future__ import annotations

from pglast import ast
from pglast.enums import A_Expr_Kind

from planner.rewrite.ast_util import column_fields, walk

Pair = tuple[ast.ColumnRef, ast.ColumnRef]


def named_items(items) -> dict[str, ast.Node]:
    """FROM items by the names they are read under, through joins: an alias, else a table's
    name, else (an unaliased function in FROM) each function's name; a join's own alias too."""
    named = {}
    stack = list(items or ())
    while stack:
        item = stack.pop()
        if isinstance(item, ast.JoinExpr):
            stack += [item.larg, item.rarg]
        if getattr(item, "alias", None) is not None:
            named[item.alias.aliasname] = item
        elif isinstance(item, ast.RangeVar):
            named[item.relname] = item
        elif isinstance(item, ast.RangeFunction):
            named.update((call.funcname[-1].sval, item) for call in function_calls(item))
    return named


def item_name(item: ast.Node) -> str | None:
    """The name a FROM item is read under (an unaliased function's: its first function's)."""
    return next(iter(named_items([item])), None) if not isinstance(item, ast.JoinExpr) else None


def function_calls(item: ast.RangeFunction) -> list[ast.FuncCall]:
    """The calls of ``FROM f(x)`` / ``ROWS FROM (f(x), g(y))``."""
    return [part for func in item.functions or () for part in func if isinstance(part, ast.FuncCall)]


def equal_pairs(conditions: list) -> list[Pair]:
    """``a = b`` conditions between two columns."""
    return [
        (c.lexpr, c.rexpr)
        for c in conditions
        if isinstance(c, ast.A_Expr)
        and c.kind == A_Expr_Kind.AEXPR_OP
        and [n.sval for n in c.name] == ["="]
        and isinstance(c.lexpr, ast.ColumnRef)
        and isinstance(c.rexpr, ast.ColumnRef)
    ]


def using_pairs(join: ast.JoinExpr) -> list[Pair]:
    """``JOIN ... USING (x)`` as ``left.x = right.x`` (when both sides have one name)."""
    left, right = named_items([join.larg]), named_items([join.rarg])
    if len(left) != 1 or len(right) != 1 or not join.usingClause:
        return []
    (a,), (b,) = left, right
    return [(column_ref(a, n.sval), column_ref(b, n.sval)) for n in join.usingClause]


def column_ref(alias: str, name: str) -> ast.ColumnRef:
    return ast.ColumnRef(fields=(ast.String(sval=alias), ast.String(sval=name)))


def alias_of(ref: ast.ColumnRef) -> str | None:
    fields = column_fields(ref)
    return fields[0] if len(fields) == 2 else None


def reads_only(condition: ast.Node, aliases: set[str]) -> bool:
    """Every column ``condition`` reads is qualified by one of ``aliases`` (no subquery, no
    parameter)."""
    refs = [n for n in walk(condition) if isinstance(n, ast.ColumnRef)]
    if not refs or any(isinstance(n, ast.SubLink | ast.ParamRef) for n in walk(condition)):
        return False
    return all(alias_of(r) in aliases for r in refs)
