"""Finding model calls in a statement and the inputs each one can reach.

For every call site the planner derives an *input query*: the call's arguments over the FROM
clause of the statement level that contains it, filtered by the WHERE conjuncts that involve no
model call and no parameter. That set is a superset of the rows that reach the call, so running
the model over it (minus cached inputs) is always enough; the original statement then runs
unchanged in Postgres, reading outputs through the installed functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pglast import ast, parse_sql

from planner.install import quote_ident
from planner.outcome import PlanError
from planner.rewrite.ast_util import (
    and_of,
    children,
    conjuncts,
    mentions_model,
    model_name,
    models_called,
    parse_condition,
    render,
    walk,
)
from planner.rewrite.implied import narrowing_conjuncts
from planner.rewrite.join_keys import function_calls, item_name, named_items
from planner.rewrite.push_down import PushContext, is_volatile
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
    lateral_rank: int = field(default=0, compare=False, hash=False)  # reads model functions' rows
    with_sql: str = ""  # the WITH clauses in scope: the input query names their CTEs too

    def input_query(
        self,
        digest_sql: str,
        arg_types: list[SqlType],
        cache_table: str,
        *,
        shown: bool = False,
        key_sql: str | None = None,
    ) -> str:
        """Rows (digest, cached?, send forms of the arguments when not cached) reaching this call.
        For people labelling (planner/labels): ``shown`` adds each argument's text form when not
        cached (NULL for bytea, shown from its send form), ``key_sql`` the source row's key."""
        pairs = list(zip(self.args, arg_types, strict=True))
        args = ", ".join(f"({a})::{t.sql} AS a{i}" for i, (a, t) in enumerate(pairs))
        key = f", {key_sql} AS sieve_key" if key_sql is not None else ""
        inner = f"{self.with_sql} SELECT {digest_sql} AS sieve_digest, {args}{key}".lstrip()
        if self.from_sql:
            inner += f" FROM {self.from_sql}"
        if self.where_sql:
            inner += f" WHERE {self.where_sql}"
        cached = "c.digest IS NOT NULL"
        outer = [
            f"CASE WHEN {cached} THEN NULL ELSE {send_sql(t, f'i.a{i}')} END"
            for i, (_, t) in enumerate(pairs)
        ]
        if shown:
            outer += [
                f"CASE WHEN {cached} THEN NULL ELSE (i.a{i})::text END" if t.base != "bytea" else "NULL::text"
                for i, (_, t) in enumerate(pairs)
            ]
        if key_sql is not None:
            outer.append("i.sieve_key")
        # OFFSET 0 keeps the digest a computed column (not re-evaluated per reference). A join,
        # not a per-row subquery: Postgres hashes a big cache once or probes its index for a
        # few inputs, and never rescans a cache that grows while this query streams.
        # ordinal <= 0 is one row per digest (0, or -1 for an input with no output rows).
        return (
            f"SELECT i.sieve_digest, {cached} AS hit, {', '.join(outer)} "
            f"FROM ({inner} OFFSET 0) AS i "
            f"LEFT JOIN {cache_table} c ON c.digest = i.sieve_digest AND c.ordinal <= 0 "
            f"WHERE i.sieve_digest IS NOT NULL"
        )


def find_call_sites(
    sql: str | list[ast.Node], models: set[str], ctx: PushContext | None = None
) -> list[CallSite]:
    """Model call sites of every statement (SQL text or parsed), in the order they must run:
    a call in a subquery (an inlined view) feeds the levels around it, an argument's call feeds
    the call it is an argument of, a model function in FROM feeds the calls that read its rows."""
    statements = [raw.stmt for raw in parse_sql(sql)] if isinstance(sql, str) else sql
    ctx = ctx or PushContext(models)
    sites: list[CallSite] = []
    for stmt in statements:
        _walk(stmt, ctx, level=None, depth=0, out=sites, withs=())
    unique = list(dict.fromkeys(sites))  # ORDER BY f(x) repeats the SELECT list's f(x)
    return _after_what_they_read(
        sorted(unique, key=lambda s: (-s.nesting, s.lateral_rank, -s.depth)), ctx.models
    )


def _after_what_they_read(sites: list[CallSite], models: set[str]) -> list[CallSite]:
    """Each site after the sites of every other model its input query calls (a subquery that
    narrows it, a CTE, a view); ties and cycles keep the nesting order."""
    reads = {id(s): models_called(parse_sql(_input_sql(s))[0].stmt, models) - {s.model} for s in sites}
    ordered, left = [], list(sites)
    while left:
        ready = next(
            (s for s in left if not any(t.model in reads[id(s)] for t in left if t is not s)),
            left[0],
        )
        ordered.append(ready)
        left.remove(ready)
    return ordered


def _input_sql(site: CallSite) -> str:
    args = ", ".join(site.args) or "1"
    source = f" FROM {site.from_sql}" if site.from_sql else ""
    where = f" WHERE {site.where_sql}" if site.where_sql else ""
    return f"{site.with_sql} SELECT {args}{source}{where}".lstrip()


def _walk(
    node: ast.Node, ctx: PushContext, level, depth: int, out: list[CallSite], withs: tuple, nesting: int = 0
) -> None:
    if isinstance(node, _SKIP):
        return
    if isinstance(node, _LEVELS):
        level = node
        nesting += 1
        if node.withClause is not None:
            withs = (*withs, node.withClause)
    if isinstance(node, ast.FuncCall) and model_name(node, ctx.models):
        if level is None:
            raise PlanError(FEATURE_NOT_SUPPORTED, "model calls are supported in SELECT, UPDATE and DELETE")
        site = _site(node, ctx, level, depth)
        out.append(replace(site, nesting=nesting, with_sql=_with_sql(withs)))
        depth += 1
    for child in children(node):
        _walk(child, ctx, level, depth, out, withs, nesting)


def _with_sql(withs: tuple) -> str:
    """One WITH clause naming every CTE in scope, so the input query binds names as the
    statement does. A CTE that writes (WITH d AS (DELETE ...)) must run exactly once: refused."""
    if not withs:
        return ""
    ctes, names, recursive = [], set(), False
    for clause in withs:
        recursive = recursive or bool(clause.recursive)
        for cte in clause.ctes:
            if not isinstance(cte.ctequery, ast.SelectStmt):
                raise PlanError(
                    FEATURE_NOT_SUPPORTED,
                    "model calls in a statement whose WITH clause modifies data are not supported",
                    hint="run the data-modifying part as a statement of its own",
                )
            if cte.ctename in names:
                raise PlanError(
                    FEATURE_NOT_SUPPORTED,
                    f'a nested WITH redefines "{cte.ctename}": rename it to call models here',
                )
            names.add(cte.ctename)
            ctes.append(render(cte))
    return ("WITH RECURSIVE " if recursive else "WITH ") + ", ".join(ctes)


def _site(call: ast.FuncCall, ctx: PushContext, level, depth: int) -> CallSite:
    models = ctx.models
    if call.agg_star or call.over is not None:
        raise PlanError(FEATURE_NOT_SUPPORTED, f"model {model_name(call, models)} is not an aggregate")
    items = _from_items(level)
    lateral = _model_functions(items, models)
    own = next((a for a, f in lateral.items() if f.call is call), None)
    reads = _aliases_read(call, lateral) if own is None else lateral[own].reads
    # Model functions this call reads stay in FROM (they are materialized first); the others go.
    needed = _closure(reads, lateral)
    hidden = set(lateral) - needed
    kept = [i for i in (_relax_joins(item, models, hidden, needed) for item in items) if i is not None]
    rank = 0 if not reads else 1 + max(_rank(a, lateral) for a in reads)
    return CallSite(
        model=model_name(call, models),
        args=tuple(render(a) for a in call.args or ()),
        from_sql=", ".join(render(i) for i in kept),
        where_sql=_narrowing(level.whereClause, ctx, hidden, _aliases(kept)),
        depth=depth,
        level=level,
        row_key=_row_key(kept),
        lateral_rank=rank,
    )


@dataclass(frozen=True)
class _ModelFunction:
    call: ast.FuncCall
    reads: frozenset[str]  # aliases of other model functions its arguments read


def _model_functions(items: list[ast.Node], models: set[str]) -> dict[str, _ModelFunction]:
    """``FROM model(x) AS s`` (LATERAL) items of a level by the name their rows are read under."""
    found: dict[str, ast.FuncCall] = {}
    for name, item in named_items(items).items():
        if _is_model_function(item, models):
            calls = function_calls(item)  # unaliased: the call of that name; aliased: the last
            found[name] = next((c for c in calls if c.funcname[-1].sval == name), calls[-1])
    return {a: _ModelFunction(c, frozenset(_aliases_read(c, found))) for a, c in found.items()}


def _aliases_read(node: ast.Node, aliases) -> set[str]:
    read = set()
    for item in walk(node):
        if isinstance(item, ast.ColumnRef) and len(item.fields) > 1:
            first = item.fields[0]
            if isinstance(first, ast.String) and first.sval in aliases:
                read.add(first.sval)
    return read


def _closure(aliases: set[str] | frozenset, lateral: dict[str, _ModelFunction]) -> set[str]:
    out, stack = set(), list(aliases)
    while stack:
        alias = stack.pop()
        if alias not in out:
            out.add(alias)
            stack += list(lateral[alias].reads)
    return out


def _rank(alias: str, lateral: dict[str, _ModelFunction], seen: frozenset = frozenset()) -> int:
    reads = lateral[alias].reads - seen
    return 0 if not reads else 1 + max(_rank(a, lateral, seen | {alias}) for a in reads)


def _row_key(items: list[ast.Node]) -> str | None:
    """``alias.ctid`` when the level reads one base table: a cheap handle on its rows."""
    if len(items) != 1 or not isinstance(items[0], ast.RangeVar):
        return None
    table = items[0]
    name = table.alias.aliasname if table.alias is not None else table.relname
    return quote_ident(name) + ".ctid"


def _from_items(level) -> list[ast.Node]:
    if isinstance(level, ast.SelectStmt):
        return list(level.fromClause or ())
    if isinstance(level, ast.UpdateStmt):
        return [level.relation, *(level.fromClause or ())]
    return [level.relation, *(level.usingClause or ())]


def _is_model_function(item: ast.Node, models: set[str]) -> bool:
    return isinstance(item, ast.RangeFunction) and mentions_model(item, models)


def _aliases(items: list[ast.Node]) -> set[str]:
    """Names the kept FROM items are read under."""
    return set(named_items(items))


def _relax_joins(item: ast.Node, models: set[str], hidden: set[str], needed: set[str]) -> ast.Node | None:
    """The FROM item with model functions the call does not read left out and join conditions
    that need models dropped: it then yields a superset of the rows that reach the call."""
    if _is_model_function(item, models):
        return item if item_name(item) in needed else None
    if not isinstance(item, ast.JoinExpr):
        return item
    larg = _relax_joins(item.larg, models, hidden, needed)
    rarg = _relax_joins(item.rarg, models, hidden, needed)
    if larg is None or rarg is None:
        return larg if rarg is None else rarg
    quals = item.quals
    if quals is not None and mentions_model(quals, models, hidden):
        kept = [c for c in narrowing_conjuncts(conjuncts(quals), models, hidden) if not is_volatile(c)]
        quals = and_of(kept) or parse_condition("true")
    return ast.JoinExpr(
        jointype=item.jointype,
        isNatural=item.isNatural,
        larg=larg,
        rarg=rarg,
        usingClause=item.usingClause,
        quals=quals,
        alias=item.alias,
    )


def _narrowing(where: ast.Node | None, ctx: PushContext, hidden: set[str], aliases: set[str]) -> str:
    """The WHERE conditions (and conditions they imply) the call's input query may apply: no
    model, no parameter, nothing volatile, no name of a level around this one."""
    kept = []
    for condition in narrowing_conjuncts(conjuncts(where), ctx.models, hidden, ctx.uncorrelated):
        if is_volatile(condition) or _reads_outer(condition, aliases):
            continue
        kept.append(condition)
    return " AND ".join(f"({render(c)})" for c in kept)


def _reads_outer(condition: ast.Node, aliases: set[str]) -> bool:
    """A qualified name neither this level's FROM nor a subquery inside the condition defines
    (a correlated subquery's outer row, which the input query cannot see)."""
    if isinstance(condition, ast.SelectStmt):
        aliases = aliases | _aliases(list(condition.fromClause or ()))
    if isinstance(condition, ast.ColumnRef) and len(condition.fields) > 1:
        first = condition.fields[0]
        if isinstance(first, ast.String) and first.sval not in aliases:
            return True
    return any(_reads_outer(child, aliases) for child in children(condition))
