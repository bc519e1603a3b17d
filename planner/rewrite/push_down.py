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
from pglast.enums import JoinType, SubLinkType

from planner.rewrite.ast_util import (
    add_conjuncts,
    children,
    column_fields,
    conjuncts,
    copy_node,
    is_plain_select,
    mentions_model,
    output_columns,
    pinned_in,
    render,
    walk,
)
from planner.rewrite.implied import implied_condition, narrowing_conjuncts
from planner.rewrite.join_keys import alias_of, equal_pairs, named_items, reads_only, using_pairs

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
    if isinstance(stmt, ast.SelectStmt) and stmt.fromClause:
        # a WHERE subquery is finished first: whether it may move is decided on its final SQL
        where = walk(stmt.whereClause) if stmt.whereClause is not None else ()
        for sublink in (n for n in where if isinstance(n, ast.SubLink)):
            push_down(sublink.subselect, ctx)
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
    return all(uncorrelated(n.subselect, ctx) for n in walk(node) if isinstance(n, ast.SubLink))


def uncorrelated(select: ast.Node, ctx: PushContext) -> bool:
    """Postgres prepared it on its own (ctx.uncorrelated), or every name in it is qualified by
    a table its own FROM reads (the semi-join conditions planner.rewrite.semi_joins writes)."""
    if render(select) in ctx.uncorrelated:
        return True
    if not isinstance(select, ast.SelectStmt) or not select.fromClause:
        return False
    own = set(named_items(select.fromClause))
    for node in walk(select):
        if isinstance(node, ast.SubLink | ast.ParamRef | ast.RangeSubselect | ast.RangeFunction):
            return False
        if isinstance(node, ast.ColumnRef) and (alias_of(node) not in own):
            return False
    return True


def _push_level(level: ast.SelectStmt, ctx: PushContext) -> None:
    candidates = narrowing_conjuncts(conjuncts(level.whereClause), ctx.models, ready=ctx.uncorrelated)
    candidates = [_pinned(c, ctx) for c in candidates if movable(c, ctx)]
    candidates += transferred(candidates, equalities(level))
    sole = len(level.fromClause) == 1 and isinstance(level.fromClause[0], ast.RangeSubselect)
    if candidates:
        for sub in [s for item in level.fromClause for s in _inner_subqueries(item)]:
            _push_into(sub, candidates, sole, ctx)
    for join, nullable, preserved in _outer_joins(level.fromClause):
        _push_into_nullable(join, nullable, preserved, candidates, ctx)
    if candidates:
        for select in _sublink_selects(level):
            _transfer_into_sublink(select, candidates, set(named_items(level.fromClause)))


def _push_into(sub: ast.RangeSubselect, conditions: list, sole: bool, ctx: PushContext) -> None:
    """Add each condition, in the subquery's own terms, to its WHERE (what it implies without
    the subquery's model columns, where it reads them)."""
    alias = sub.alias.aliasname if sub.alias else None
    columns = output_columns(sub.subquery)
    hidden = model_function_aliases(sub.subquery.fromClause or (), ctx.models)
    pushed = []
    for conjunct in conditions:
        rewritten = _rewrite(conjunct, alias, sole, columns)
        if rewritten is None:
            continue
        if not mentions_model(rewritten, ctx.models, ready=ctx.uncorrelated):
            pushed.append(rewritten)
        # What it implies without the subquery's model columns (and without a model
        # function's rows, so that the other items are filtered before the function runs)
        if mentions_model(rewritten, ctx.models, hidden, ctx.uncorrelated):
            implied = implied_condition(rewritten, ctx.models, hidden, ctx.uncorrelated)
            if implied is not None:
                pushed.append(implied)
    if pushed:
        add_conjuncts(sub.subquery, pushed)


def _pinned(condition: ast.Node, ctx: PushContext) -> ast.Node:
    """``x IN (SELECT ...)`` as ``(x IN (SELECT ...) OR false)`` (see ast_util.pinned_in):
    Postgres then filters where it is written, before any model call of that scan (a
    semi-join would run those calls on rows the inputs never included)."""
    if not (isinstance(condition, ast.SubLink) and condition.subLinkType == SubLinkType.ANY_SUBLINK):
        return condition
    operator = [n.sval for n in condition.operName or ()]
    if operator not in ([], ["="]) or isinstance(condition.testexpr, ast.RowExpr):
        return condition
    return pinned_in(condition.testexpr, copy_node(condition.subselect))


def _outer_joins(items) -> list[tuple[ast.JoinExpr, ast.RangeSubselect, ast.Node]]:
    """(join, its nullable side when a plain subquery, its preserved side) of LEFT/RIGHT joins."""
    found = []
    stack = list(items)
    while stack:
        item = stack.pop()
        if not isinstance(item, ast.JoinExpr):
            continue
        stack += [item.larg, item.rarg]
        sides = {JoinType.JOIN_LEFT: (item.rarg, item.larg), JoinType.JOIN_RIGHT: (item.larg, item.rarg)}
        nullable, preserved = sides.get(item.jointype, (None, None))
        if isinstance(nullable, ast.RangeSubselect) and _plain_subquery(nullable):
            found.append((item, nullable, preserved))
    return found


def _push_into_nullable(join: ast.JoinExpr, nullable, preserved, candidates: list, ctx: PushContext) -> None:
    """An outer join's nullable side only matters where it matches: ON conditions on it alone,
    and WHERE conditions on the preserved side carried over by an ON equality, narrow it."""
    alias = nullable.alias.aliasname
    on = conjuncts(join.quals)
    own = [c for c in on if reads_only(_outside_subqueries(c), {alias}) and movable(c, ctx)]
    kept = set(named_items([preserved]))
    pairs = [(a, b) for a, b in equal_pairs(on) if alias_of(a) == alias and alias_of(b) in kept]
    sources = [c for c in candidates if reads_only(c, kept)]
    carried = [c for c in transferred(sources, pairs) if reads_only(c, {alias})]
    conditions = narrowing_conjuncts(own, ctx.models, ready=ctx.uncorrelated) + carried
    if conditions:
        _push_into(nullable, conditions, False, ctx)


def _sublink_selects(level: ast.SelectStmt) -> list[ast.SelectStmt]:
    """Subqueries evaluated only for rows that pass the level's WHERE: in its target list or
    in its WHERE (any of its conjuncts)."""
    places = list(level.targetList or ()) + conjuncts(level.whereClause)
    return [
        n.subselect
        for place in places
        for n in walk(place)
        if isinstance(n, ast.SubLink) and isinstance(n.subselect, ast.SelectStmt) and n.subselect.fromClause
    ]


def _transfer_into_sublink(select: ast.SelectStmt, candidates: list, outer: set[str]) -> None:
    """``WHERE f.frame < 50 AND EXISTS (SELECT ... WHERE c.frame = f.frame)``: only inner rows
    with ``c.frame < 50`` can matter to a row the outer WHERE keeps."""
    inner = set(named_items(select.fromClause))
    visible = outer - inner
    pairs = []
    for a, b in equal_pairs(conjuncts(select.whereClause)):
        for mine, theirs in ((a, b), (b, a)):
            if alias_of(mine) in inner and alias_of(theirs) in visible:
                pairs.append((theirs, mine))
    sources = [c for c in candidates if reads_only(c, visible)]
    carried = [c for c in transferred(sources, pairs) if reads_only(c, inner)]
    if carried:
        add_conjuncts(select, carried)


def _outside_subqueries(condition: ast.Node) -> ast.Node:
    """``condition`` with each subquery's own subselect left out (testexpr kept): what it reads
    of the level it is written in."""
    if isinstance(condition, ast.SubLink):
        return condition.testexpr if condition.testexpr is not None else ast.A_Const(isnull=True)
    return _mapped(condition, _outside_subqueries)


def _plain_subquery(item: ast.RangeSubselect) -> bool:
    return item.alias is not None and not item.alias.colnames and is_plain_select(item.subquery)


def model_function_aliases(items, models: set[str]) -> set[str]:
    """Names under which ``FROM model(x) AS s`` rows are read in these FROM items."""
    return {
        name
        for name, item in named_items(items).items()
        if isinstance(item, ast.RangeFunction) and mentions_model(item, models)
    }


def equalities(level: ast.SelectStmt) -> list[tuple[ast.ColumnRef, ast.ColumnRef]]:
    """``a.x = b.y`` pairs that hold on every row of the level: WHERE conjuncts, and the
    conditions (ON or USING) of its inner joins."""
    conditions = conjuncts(level.whereClause)
    pairs = []
    stack = list(level.fromClause or ())
    while stack:
        item = stack.pop()
        if isinstance(item, ast.JoinExpr) and item.jointype == JoinType.JOIN_INNER:
            conditions += conjuncts(item.quals)
            pairs += using_pairs(item)
            stack += [item.larg, item.rarg]
    return equal_pairs(conditions) + pairs


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
        return [item] if _plain_subquery(item) else []
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
