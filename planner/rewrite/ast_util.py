"""AST helpers shared by the rewrite passes (pglast nodes in, nodes or SQL text out)."""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast, parse_sql
from pglast.enums import BoolExprType, SubLinkType
from pglast.parser import ParseError
from pglast.stream import RawStream

AGGREGATES = frozenset(
    {
        "count",
        "sum",
        "avg",
        "min",
        "max",
        "array_agg",
        "string_agg",
        "bool_and",
        "bool_or",
        "every",
        "stddev",
        "variance",
        "json_agg",
        "jsonb_agg",
        "percentile_cont",
        "percentile_disc",
    }
)
# Statements that define rather than run: nothing inside them reaches a model now.
DEFINITIONS = (ast.ViewStmt, ast.CreateFunctionStmt, ast.DropStmt, ast.RenameStmt, ast.AlterTableStmt)


def render(node: ast.Node) -> str:
    return RawStream()(node)


def single_select(sql: str) -> ast.SelectStmt | None:
    """The statement when ``sql`` is exactly one SELECT that parses; else None."""
    try:
        statements = [raw.stmt for raw in parse_sql(sql)]
    except ParseError:
        return None
    if len(statements) != 1 or not isinstance(statements[0], ast.SelectStmt):
        return None
    return statements[0]


def parse_condition(sql: str) -> ast.Node:
    """A boolean expression from its SQL text."""
    return parse_sql(f"SELECT 1 WHERE {sql}")[0].stmt.whereClause


def nodes_in(value) -> Iterator[ast.Node]:
    """Every AST node in a field value (a node, or lists of nodes nested in lists)."""
    if isinstance(value, ast.Node):
        yield value
    elif isinstance(value, tuple | list):  # RangeFunction.functions nests lists in a list
        for item in value:
            yield from nodes_in(item)


def children(node: ast.Node) -> Iterator[ast.Node]:
    for name in node.__slots__:
        yield from nodes_in(getattr(node, name, None))


def walk(node: ast.Node) -> Iterator[ast.Node]:
    """``node`` and every node below it, depth first."""
    yield node
    for child in children(node):
        yield from walk(child)


def conjuncts(node: ast.Node | None) -> list[ast.Node]:
    if node is None:
        return []
    if isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.AND_EXPR:
        return [part for arg in node.args for part in conjuncts(arg)]
    return [node]


def and_of(parts: list[ast.Node]) -> ast.Node | None:
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else ast.BoolExpr(boolop=BoolExprType.AND_EXPR, args=tuple(parts))


def add_conjuncts(select: ast.SelectStmt, extra: list[ast.Node]) -> None:
    """AND ``extra`` into the WHERE, leaving out what it already says (passes may run again
    over a tree they built: the same tree must come out)."""
    present = conjuncts(select.whereClause)
    seen = {render(c) for c in present}
    fresh = []
    for condition in extra:
        text = render(condition)
        if text not in seen:
            seen.add(text)
            fresh.append(condition)
    select.whereClause = and_of(present + fresh)


def pinned_in(testexpr: ast.Node, subselect: ast.Node) -> ast.BoolExpr:
    """``(x IN (SELECT ...) OR false)``: the rows of ``x IN (...)``, but Postgres, which pulls an
    IN in WHERE up into a semi-join, keeps this one a hashed subplan that filters the scan it
    is written at, before any costlier condition there (a model call)."""
    sublink = ast.SubLink(
        subLinkType=SubLinkType.ANY_SUBLINK, subLinkId=0, testexpr=testexpr, subselect=subselect
    )
    false = ast.A_Const(val=ast.Boolean(boolval=False))
    return ast.BoolExpr(boolop=BoolExprType.OR_EXPR, args=(sublink, false))


def model_name(call: ast.FuncCall, models: set[str]) -> str | None:
    names = [n.sval for n in call.funcname]
    if len(names) == 2 and names[0] != "public":
        return None
    return names[-1] if names[-1] in models else None


def column_fields(ref: ast.ColumnRef) -> list[str | None]:
    """A column reference's names; None stands for ``*``."""
    return [f.sval if isinstance(f, ast.String) else None for f in ref.fields]


def mentions_model(
    node: ast.Node,
    models: set[str],
    hidden: frozenset | set = frozenset(),
    ready: frozenset | set = frozenset(),
) -> bool:
    """True when ``node`` calls a model, reads a model function's rows (``hidden`` aliases), or
    uses a parameter (unknown while planning). Calls inside a subquery whose SQL is in ``ready``
    (an uncorrelated subquery, whose own call sites run first) do not count."""
    for item in _walk_outside(node, ready):
        if isinstance(item, ast.ParamRef):
            return True
        if isinstance(item, ast.FuncCall) and model_name(item, models):
            return True
        if hidden and isinstance(item, ast.ColumnRef) and len(item.fields) > 1:
            first = item.fields[0]
            if isinstance(first, ast.String) and first.sval in hidden:
                return True
    return False


def _walk_outside(node: ast.Node, ready) -> Iterator[ast.Node]:
    yield node
    if ready and isinstance(node, ast.SubLink) and render(node.subselect) in ready:
        yield from () if node.testexpr is None else _walk_outside(node.testexpr, ready)
        return
    for child in children(node):
        yield from _walk_outside(child, ready)


def models_called(node: ast.Node, models: set[str]) -> set[str]:
    return {model_name(n, models) for n in walk(node) if isinstance(n, ast.FuncCall)} - {None}


def is_plain_select(select) -> bool:
    """A SELECT whose rows are its FROM rows filtered (no grouping, DISTINCT, LIMIT, set
    operation or window): a condition on its output may move into its WHERE."""
    if not isinstance(select, ast.SelectStmt) or select.op is None or select.op.name != "SETOP_NONE":
        return False
    if select.groupClause or select.havingClause or select.distinctClause or select.limitCount:
        return False
    if select.limitOffset or select.windowClause or select.withClause is not None:
        return False
    return not has_aggregates(select.targetList or ())


def has_aggregates(targets) -> bool:
    return any(_aggregate_or_window(t) for t in targets)


def _aggregate_or_window(node: ast.Node) -> bool:
    for item in walk(node):
        if isinstance(item, ast.FuncCall):
            if item.over is not None or item.agg_star or item.agg_distinct:
                return True
            if item.funcname[-1].sval.lower() in AGGREGATES:
                return True
    return False


def output_columns(select: ast.SelectStmt) -> dict[str, ast.Node]:
    """A SELECT's named output columns and their expressions (``*`` is not expanded)."""
    columns = {}
    for target in select.targetList or ():
        expr = target.val
        name = target.name
        if name is None and isinstance(expr, ast.ColumnRef) and isinstance(expr.fields[-1], ast.String):
            name = expr.fields[-1].sval
        if name is None and isinstance(expr, ast.FuncCall):
            name = expr.funcname[-1].sval  # Postgres names an unaliased call after the function
        if name is not None:
            columns[name] = expr
    return columns


def copy_node(node):
    """A deep copy (pglast nodes compare by value; passes must not share subtrees)."""
    if isinstance(node, tuple | list):
        return type(node)(copy_node(v) for v in node)
    if not isinstance(node, ast.Node):
        return node
    clone = type(node)()
    for name in node.__slots__:
        setattr(clone, name, copy_node(getattr(node, name, None)))
    return clone
