"""Finding model calls in a statement and the inputs each one can reach.

For every call site the planner derives an *input query*: the call's arguments over the FROM
clause of the statement level that contains it, filtered by the WHERE conjuncts that involve no
model call and no parameter. That set is a superset of the rows that reach the call, so running
the model over it (minus cached inputs) is always enough; the original statement then runs
unchanged in Postgres, reading outputs through the installed functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pglast import ast, parse_sql
from pglast.stream import RawStream

from planner.outcome import PlanError
from planner.send_forms import send_sql
from planner.sqltypes import SqlType

FEATURE_NOT_SUPPORTED = "0A000"
_LEVELS = (ast.SelectStmt, ast.UpdateStmt, ast.DeleteStmt)
_SKIP = (ast.ViewStmt, ast.CreateFunctionStmt)  # defining, not running: nothing to materialize


@dataclass(frozen=True)
class CallSite:
    model: str
    args: tuple[str, ...]  # SQL text of each argument
    from_sql: str  # "" when the level has no FROM
    where_sql: str  # "" when nothing could be pushed down
    depth: int  # nesting of model calls: inner calls (arguments of others) are deeper
    level: object = field(default=None, compare=False, hash=False, repr=False)  # its AST level
    nesting: int = field(default=0, compare=False, hash=False)  # statement levels around it
    row_key: str | None = field(default=None, compare=False, hash=False)  # e.g. "d".ctid

    def input_query(
        self, digest_sql: str, arg_types: list[SqlType], cache_table: str, with_row_key: bool = False
    ) -> str:
        """Rows (digest, cached?, send forms of the arguments when not cached[, row key])
        reaching this call."""
        pairs = list(zip(self.args, arg_types, strict=True))
        args = ", ".join(f"({a})::{t.sql} AS a{i}" for i, (a, t) in enumerate(pairs))
        if with_row_key:
            args += f", ({self.row_key})::text AS sieve_row"
        inner = f"SELECT {digest_sql} AS sieve_digest, {args}"
        if self.from_sql:
            inner += f" FROM {self.from_sql}"
        if self.where_sql:
            inner += f" WHERE {self.where_sql}"
        cached = "c.digest IS NOT NULL"
        outer_args = ", ".join(
            f"CASE WHEN {cached} THEN NULL ELSE {send_sql(t, f'i.a{i}')} END"
            for i, (_, t) in enumerate(pairs)
        )
        # OFFSET 0 keeps the digest a computed column (not re-evaluated per reference). A join,
        # not a per-row subquery: Postgres hashes a big cache once or probes its index for a
        # few inputs, and never rescans a cache that grows while this query streams.
        # ordinal <= 0 is one row per digest (0, or -1 for an input with no output rows).
        if with_row_key:
            outer_args += ", i.sieve_row"
        return (
            f"SELECT i.sieve_digest, {cached} AS hit, {outer_args} "
            f"FROM ({inner} OFFSET 0) AS i "
            f"LEFT JOIN {cache_table} c ON c.digest = i.sieve_digest AND c.ordinal <= 0 "
            f"WHERE i.sieve_digest IS NOT NULL"
        )


def find_call_sites(sql: str | list[ast.Node], models: set[str]) -> list[CallSite]:
    """Model call sites of every statement (SQL text or parsed), innermost calls first."""
    statements = [raw.stmt for raw in parse_sql(sql)] if isinstance(sql, str) else sql
    sites: list[CallSite] = []
    for stmt in statements:
        _walk(stmt, models, level=None, depth=0, out=sites)
    unique = list(dict.fromkeys(sites))  # ORDER BY f(x) repeats the SELECT list's f(x)
    # A call in a subquery (an inlined view) feeds the levels around it; an argument's call feeds
    # the call it is an argument of: both run first.
    return sorted(unique, key=lambda s: (-s.nesting, -s.depth))


def _children(node: ast.Node):
    for name in node.__slots__:
        yield from nodes_in(getattr(node, name, None))


def nodes_in(value):
    """Every AST node in a field value (a node, or lists of nodes nested in lists)."""
    if isinstance(value, ast.Node):
        yield value
    elif isinstance(value, tuple | list):  # RangeFunction.functions nests lists in a list
        for item in value:
            yield from nodes_in(item)


def _walk(node: ast.Node, models: set[str], level, depth: int, out: list[CallSite], nesting: int = 0) -> None:
    if isinstance(node, _SKIP):
        return
    if isinstance(node, _LEVELS):
        level = node
        nesting += 1
    if isinstance(node, ast.FuncCall) and _model_name(node, models):
        if level is None:
            raise PlanError(FEATURE_NOT_SUPPORTED, "model calls are supported in SELECT, UPDATE and DELETE")
        site = _site(node, models, level, depth)
        out.append(CallSite(**{**site.__dict__, "nesting": nesting}))
        depth += 1
    for child in _children(node):
        _walk(child, models, level, depth, out, nesting)


def _model_name(call: ast.FuncCall, models: set[str]) -> str | None:
    names = [n.sval for n in call.funcname]
    if len(names) == 2 and names[0] != "public":
        return None
    return names[-1] if names[-1] in models else None


def _site(call: ast.FuncCall, models: set[str], level, depth: int) -> CallSite:
    if call.agg_star or call.over is not None:
        raise PlanError(FEATURE_NOT_SUPPORTED, f"model {_model_name(call, models)} is not an aggregate")
    args = tuple(RawStream()(a) for a in call.args or ())
    items = _from_items(level)
    hidden = _model_function_aliases(items, models)
    kept = [i for i in (_relax_joins(item, models, hidden) for item in items) if i is not None]
    return CallSite(
        model=_model_name(call, models),
        args=args,
        from_sql=", ".join(RawStream()(i) for i in kept),
        where_sql=_pushable(level.whereClause, models, hidden),
        depth=depth,
        level=level,
        row_key=_row_key(kept),
    )


def _row_key(items: list[ast.Node]) -> str | None:
    """``alias.ctid`` when the level reads one base table: a cheap handle on its rows."""
    if len(items) != 1 or not isinstance(items[0], ast.RangeVar):
        return None
    table = items[0]
    name = table.alias.aliasname if table.alias is not None else table.relname
    return '"' + name.replace('"', '""') + '".ctid'


def _from_items(level) -> list[ast.Node]:
    if isinstance(level, ast.SelectStmt):
        return list(level.fromClause or ())
    if isinstance(level, ast.UpdateStmt):
        return [level.relation, *(level.fromClause or ())]
    return [level.relation, *(level.usingClause or ())]


def _is_model_function(item: ast.Node, models: set[str]) -> bool:
    return isinstance(item, ast.RangeFunction) and _mentions(item, models)


def _model_function_aliases(items: list[ast.Node], models: set[str]) -> set[str]:
    """Names under which ``FROM model(x) AS s`` (LATERAL) rows are visible: s, or the model's name."""
    aliases: set[str] = set()
    for item in items:
        stack = [item]
        while stack:
            node = stack.pop()
            if _is_model_function(node, models):
                if node.alias is not None:
                    aliases.add(node.alias.aliasname)
                for func in node.functions or ():
                    for part in func:
                        if isinstance(part, ast.FuncCall):
                            aliases.add(part.funcname[-1].sval)
            elif isinstance(node, ast.JoinExpr):
                stack += [node.larg, node.rarg]
    return aliases


def _relax_joins(item: ast.Node, models: set[str], hidden: set[str]) -> ast.Node | None:
    """The FROM item with model functions left out and join conditions calling models dropped:
    it then yields a superset of the rows that reach each call."""
    if _is_model_function(item, models):
        return None
    if not isinstance(item, ast.JoinExpr):
        return item
    larg, rarg = _relax_joins(item.larg, models, hidden), _relax_joins(item.rarg, models, hidden)
    if larg is None or rarg is None:
        return larg if rarg is None else rarg
    quals = item.quals
    if quals is not None and _mentions(quals, models, hidden):
        kept = _pushable(quals, models, hidden)
        quals = parse_sql(f"SELECT 1 WHERE {kept or 'true'}")[0].stmt.whereClause
    return ast.JoinExpr(
        jointype=item.jointype,
        isNatural=item.isNatural,
        larg=larg,
        rarg=rarg,
        usingClause=item.usingClause,
        quals=quals,
        alias=item.alias,
    )


def _pushable(where: ast.Node | None, models: set[str], hidden: frozenset | set = frozenset()) -> str:
    if where is None:
        return ""
    kept = [c for c in conjuncts(where) if not _mentions(c, models, hidden)]
    return " AND ".join(f"({RawStream()(c)})" for c in kept)


def conjuncts(node: ast.Node) -> list[ast.Node]:
    from pglast.enums import BoolExprType

    if isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.AND_EXPR:
        out = []
        for arg in node.args:
            out.extend(conjuncts(arg))
        return out
    return [node]


def mentions_model(node: ast.Node, models: set[str]) -> bool:
    return _mentions(node, models)


def _mentions(node: ast.Node, models: set[str], hidden: frozenset | set = frozenset()) -> bool:
    """True when ``node`` calls a model, reads a model function's rows (``hidden`` aliases), or
    uses a parameter (unknown while planning)."""
    if isinstance(node, ast.ParamRef):
        return True
    if isinstance(node, ast.FuncCall) and _model_name(node, models):
        return True
    if hidden and isinstance(node, ast.ColumnRef) and len(node.fields) > 1:
        first = node.fields[0]
        if isinstance(first, ast.String) and first.sval in hidden:
            return True
    return any(_mentions(child, models, hidden) for child in _children(node))
