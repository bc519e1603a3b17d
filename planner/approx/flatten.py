"""Approximate queries over model views: merge each simple view into the query that reads it.

``SELECT id FROM digit_predictions WHERE digit = 7`` with ``digit_predictions`` defined as
``SELECT d.id, digit_oracle(d.pixels) AS digit FROM digits d`` becomes
``SELECT d.id AS id FROM digits AS d WHERE digit_oracle(d.pixels) = 7``: the view's FROM items
(tables, joins, ``LATERAL`` model functions) take its place, its WHERE joins the query's WHERE,
and every reference to a view column is replaced by the column's defining expression. The
approximate operators then see model calls over base tables. Views over views flatten fully.

Names are resolved as Postgres resolves them: a reference binds to the innermost FROM that
provides it. Without a catalog a table's columns are known only from what the statement and the
view definitions (bound by Postgres, fully qualified) read of it, so inside a subquery only
references that provably reach the view are rewritten, and an unqualified name that could be
either the subquery's own column or the view's is refused with a hint to qualify it.

Only views Postgres could pull up too are merged (no grouping, DISTINCT, LIMIT, set operations,
window functions or WITH; an ORDER BY inside the view does not order the query, so it is
dropped), and only from the query's own FROM, never from the nullable side of an outer join.
What stays unmerged is reported in the result so that the caller can refuse the query rather
than run another one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pglast import ast, parse_sql
from pglast.enums import JoinType
from pglast.parser import ParseError

from planner.outcome import PlanError
from planner.rewrite.ast_util import and_of, column_fields, conjuncts, copy_node, has_aggregates, walk
from planner.rewrite.inline_views import inline_views, view_name
from planner.rewrite.join_keys import item_name, named_items
from planner.sqlstate import AMBIGUOUS_COLUMN, FEATURE_NOT_SUPPORTED, UNDEFINED_COLUMN

log = logging.getLogger(__name__)

UNNAMED = "?column?"  # Postgres's name for an output column it cannot name

# A resolver sees each column reference with its scopes, innermost first (the last one is the
# SELECT the walk started at) and returns its replacement, or None to keep it.
Resolver = Callable[[ast.ColumnRef, tuple["_Level", ...]], ast.Node | None]
# A star resolver sees ``*`` / ``x.*`` in a target list and returns the targets it stands for.
StarResolver = Callable[[ast.ColumnRef, tuple["_Level", ...]], list[ast.ResTarget] | None]


@dataclass(frozen=True)
class Unflattened:
    """A model view left as a subquery, and why."""

    view: str
    reason: str


@dataclass(frozen=True)
class Flattening:
    """What ``flatten_views`` did: true when it merged anything (as the bool it used to return).

    ``unflattened``: model views in the query's own FROM left as subqueries: the approximate
    operators would not see their model calls, so the query must be refused (``refuse()``).
    ``nested``: model views read inside subqueries (conditions such as ``x IN (SELECT ...)``);
    they run as they are written and may be acceptable to the caller."""

    merged: tuple[str, ...] = ()
    unflattened: tuple[Unflattened, ...] = ()
    nested: tuple[Unflattened, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.merged)

    def refuse(self) -> None:
        """Raise 0A000 naming the first view of the query's FROM that could not be merged."""
        if self.unflattened:
            first = self.unflattened[0]
            raise PlanError(
                FEATURE_NOT_SUPPORTED,
                f"the view {first.view} cannot be merged into an approximate query: {first.reason}",
                hint="write the query over the view's tables and model functions",
            )


def flatten_views(stmt: ast.SelectStmt, views: dict[str, str]) -> Flattening:
    """Merge the model views ``stmt`` reads into it, in place (``views``: name -> definition).

    Every view is inlined as a subquery first; those that can be merged are, and the rest are
    listed in the result with the reason. Raises PlanError when a name's binding cannot be
    proven (0A000), a view has no such column (42703) or a name is ambiguous (42702); the
    statement is then left half rewritten and must not run."""
    if not views:
        return Flattening()
    before = {id(n) for n in walk(stmt) if isinstance(n, ast.RangeSubselect)}
    view_refs = [n for n in walk(stmt) if isinstance(n, ast.RangeVar) and view_name(n) in views]
    names = {id(r.alias): r.relname for r in view_refs if r.alias is not None}
    inline_views(stmt, views)
    inlined = [n for n in walk(stmt) if isinstance(n, ast.RangeSubselect) and id(n) not in before]
    if not inlined:
        return Flattening()
    labels = {id(s): _label(s, names) for s in inlined}
    evidence = _evidence(stmt, views)
    merged = []
    hidden: set[int] = set()  # items that merged views brought in: their other columns stay hidden
    while (site := _next_site(stmt)) is not None:
        _merge(stmt, site, evidence, hidden)
        merged.append(labels.get(id(site.sub), site.alias))
    left = {id(n) for n in walk(stmt) if isinstance(n, ast.RangeSubselect)}
    top = {id(site.sub): site for site in _sites(stmt)}
    kept, nested = [], []
    for sub in (s for s in inlined if id(s) in left):
        site = top.get(id(sub))
        if site is not None:
            kept.append(Unflattened(labels[id(sub)], site.position or _blocker(sub) or "it cannot be merged"))
        else:
            nested.append(Unflattened(labels[id(sub)], _why_nested(stmt, sub, labels)))
    if kept or nested:
        log.debug("model views left as subqueries: %s %s", kept, nested)
    return Flattening(tuple(merged), tuple(kept), tuple(nested))


def _label(sub: ast.RangeSubselect, names: dict[int, str]) -> str:
    alias = sub.alias.aliasname
    relname = names.get(id(sub.alias))
    return alias if relname is None or relname == alias else f"{relname} (as {alias})"


# -- where views sit ------------------------------------------------------------------------------


@dataclass
class _Site:
    """A subquery in the statement's own FROM: where it sits and what keeps it there."""

    sub: ast.RangeSubselect
    container: ast.Node  # the statement (key: index in fromClause) or a JoinExpr (key: side)
    key: int | str
    position: str | None  # why its place forbids merging, if it does

    @property
    def alias(self) -> str:
        return self.sub.alias.aliasname if self.sub.alias is not None else "(subquery)"


def _sites(stmt: ast.SelectStmt) -> Iterator[_Site]:
    for index, item in enumerate(stmt.fromClause or ()):
        if isinstance(item, ast.RangeSubselect):
            yield _Site(item, stmt, index, None)
        elif isinstance(item, ast.JoinExpr):
            yield from _join_sites(item, None)


_NULLABLE = {
    JoinType.JOIN_LEFT: ("rarg",),
    JoinType.JOIN_RIGHT: ("larg",),
    JoinType.JOIN_FULL: ("larg", "rarg"),
}


def _join_sites(join: ast.JoinExpr, inherited: str | None) -> Iterator[_Site]:
    for side in ("larg", "rarg"):
        position = inherited
        if position is None and join.alias is not None:
            position = f"it is inside a join named {join.alias.aliasname}"
        if position is None and side in _NULLABLE.get(join.jointype, ()):
            position = "it is on the nullable side of an outer join"
        arg = getattr(join, side)
        if isinstance(arg, ast.RangeSubselect):
            if position is None and (join.usingClause or join.isNatural):
                position = "it is joined with USING or NATURAL"
            yield _Site(arg, join, side, position)
        elif isinstance(arg, ast.JoinExpr):
            yield from _join_sites(arg, position)


def _next_site(stmt: ast.SelectStmt) -> _Site | None:
    return next((s for s in _sites(stmt) if s.position is None and _blocker(s.sub) is None), None)


def _blocker(sub: ast.RangeSubselect) -> str | None:
    """Why this subquery's rows are not its FROM rows filtered (None: it can be merged)."""
    body = sub.subquery
    if sub.lateral:
        return "it is a LATERAL subquery"
    if sub.alias is None:
        return "it has no alias"
    if not isinstance(body, ast.SelectStmt) or body.op.name != "SETOP_NONE":
        return "it is a set operation (UNION, INTERSECT or EXCEPT)"
    return _shape_blocker(body) or _columns_blocker(body, sub.alias)


def _shape_blocker(body: ast.SelectStmt) -> str | None:
    checks = (
        (body.withClause is not None, "it has a WITH clause"),
        (body.valuesLists, "it is a VALUES list"),
        (not body.fromClause, "it has no FROM clause"),
        (body.groupClause or body.havingClause, "it groups rows (GROUP BY or HAVING)"),
        (body.distinctClause, "it uses DISTINCT"),
        (body.limitCount or body.limitOffset, "it has LIMIT or OFFSET"),
        (body.windowClause or _has_window(body), "it uses a window function"),
        (has_aggregates(body.targetList or ()), "it computes an aggregate"),
        (body.lockingClause, "it locks rows (FOR UPDATE)"),
    )
    for failed, reason in checks:
        if failed:
            return reason
    allowed = ast.RangeVar | ast.JoinExpr | ast.RangeFunction | ast.RangeSubselect
    odd = [i for i in body.fromClause if not isinstance(i, allowed)]
    return f"it reads a {type(odd[0]).__name__} in FROM" if odd else None


def _has_window(body: ast.SelectStmt) -> bool:
    return any(isinstance(n, ast.FuncCall) and n.over is not None for n in walk(body))


def _columns_blocker(body: ast.SelectStmt, alias: ast.Alias) -> str | None:
    names, complete = output_names(body)
    if not complete:
        return "its column list has *"
    if alias.colnames and len(alias.colnames) > len(names):
        return f"{alias.aliasname} names more columns than it has"
    renamed = _renamed(names, alias)
    double = sorted({n for n in renamed if renamed.count(n) > 1})
    return f"two of its columns are named {double[0]}" if double else None


def _why_nested(stmt: ast.SelectStmt, sub: ast.RangeSubselect, labels: dict[int, str]) -> str:
    for site in _sites(stmt):
        if any(n is sub for n in walk(site.sub)):
            return f"it is read by {labels.get(id(site.sub), site.alias)}, which is not merged"
    return "it is read inside a subquery (only views in the query's own FROM are merged)"


# -- output columns (Postgres's names for a SELECT's columns) -------------------------------------


def output_names(select: ast.SelectStmt) -> tuple[list[str], bool]:
    """A SELECT's output column names, and whether the list is complete (no ``*`` in it)."""
    if select.op.name != "SETOP_NONE":
        return output_names(select.larg)
    if select.valuesLists:
        return [f"column{i + 1}" for i in range(len(select.valuesLists[0]))], True
    names = []
    for target in select.targetList or ():
        if isinstance(target.val, ast.ColumnRef) and isinstance(target.val.fields[-1], ast.A_Star):
            return names, False
        names.append(target.name or _figure_name(target.val))
    return names, True


def _figure_name(expr: ast.Node) -> str:
    """The name Postgres gives an unnamed output expression (FigureColname's common cases)."""
    if isinstance(expr, ast.ColumnRef) and isinstance(expr.fields[-1], ast.String):
        return expr.fields[-1].sval
    if isinstance(expr, ast.FuncCall):
        return expr.funcname[-1].sval
    if isinstance(expr, ast.TypeCast):
        inner = _figure_name(expr.arg)
        return inner if inner != UNNAMED else expr.typeName.names[-1].sval
    if isinstance(expr, ast.CaseExpr):
        return "case"
    if isinstance(expr, ast.A_ArrayExpr):
        return "array"
    if isinstance(expr, ast.SubLink) and isinstance(expr.subselect, ast.SelectStmt):
        names, _ = output_names(expr.subselect)
        return names[0] if names and expr.subLinkType.name == "EXPR_SUBLINK" else "exists"
    return UNNAMED


def _renamed(names: list[str], alias: ast.Alias | None) -> list[str]:
    given = [c.sval for c in (alias.colnames or ())] if alias is not None else []
    return given + names[len(given) :]


def _view_columns(body: ast.SelectStmt, alias: ast.Alias) -> dict[str, ast.Node]:
    names, _ = output_names(body)
    exprs = [t.val for t in body.targetList]
    return dict(zip(_renamed(names, alias), exprs, strict=True))


# -- scopes -------------------------------------------------------------------------------------


@dataclass
class _Level:
    """One SELECT's FROM names (and the CTEs it can read), as seen by the references in it."""

    items: dict[str, ast.Node]
    ctes: dict[str, ast.CommonTableExpr] = field(default_factory=dict)


class _Scoped:
    """Visits every column reference of a SELECT, nested ones included, with its scopes."""

    def __init__(self, on_ref: Resolver, on_star: StarResolver | None = None, roots: bool = False) -> None:
        self.on_ref = on_ref
        self.on_star = on_star
        # also visit the SELECTs that see nothing of the one the walk starts at (its CTEs and
        # plain subqueries in FROM), each as a walk of its own
        self.roots = roots

    def run(self, select: ast.SelectStmt) -> None:
        self._select(select, ())

    def _select(self, select: ast.SelectStmt, outer: tuple[_Level, ...]) -> None:
        ctes = dict(outer[0].ctes) if outer else {}
        if select.withClause is not None:
            for cte in select.withClause.ctes:
                # a CTE sees the levels outside this SELECT (and, if recursive, itself: no matter)
                if outer or self.roots:
                    self._select(cte.ctequery, outer)
                ctes[cte.ctename] = cte
        if select.op.name != "SETOP_NONE":
            scope = (_Level({}, ctes), *outer) if select.withClause is not None else outer
            self._select(select.larg, scope)
            self._select(select.rarg, scope)
            return
        if select.valuesLists:
            select.valuesLists = self.expr(select.valuesLists, outer)
            return
        chain = (_Level(named_items(select.fromClause), ctes), *outer)
        self._from(select.fromClause or (), chain, outer)
        outputs = set(output_names(select)[0])
        select.targetList = self._targets(select.targetList, chain)
        for name in ("whereClause", "groupClause", "havingClause", "distinctClause", "windowClause"):
            setattr(select, name, self.expr(getattr(select, name), chain))
        select.sortClause = self._sort(select.sortClause, chain, outputs)
        select.limitCount = self.expr(select.limitCount, outer)
        select.limitOffset = self.expr(select.limitOffset, outer)

    def _from(self, items, chain: tuple[_Level, ...], outer: tuple[_Level, ...]) -> None:
        for item in items:
            if isinstance(item, ast.RangeSubselect):
                # a plain subquery in FROM cannot see its siblings, only the levels outside
                if item.lateral or outer or self.roots:
                    self._select(item.subquery, chain if item.lateral else outer)
            elif isinstance(item, ast.JoinExpr):
                self._from((item.larg, item.rarg), chain, outer)
                item.quals = self.expr(item.quals, chain)
            elif isinstance(item, ast.RangeFunction):
                item.functions = self.expr(item.functions, chain)

    def _targets(self, targets, chain: tuple[_Level, ...]):
        if targets is None:
            return None
        out = []
        for target in targets:
            val = target.val
            star = isinstance(val, ast.ColumnRef) and isinstance(val.fields[-1], ast.A_Star)
            expanded = self.on_star(val, chain) if star and self.on_star else None
            if expanded is not None:
                out += expanded
                continue
            new = val if star else self.expr(val, chain)
            if new is not val and target.name is None and isinstance(val, ast.ColumnRef):
                target.name = _figure_name(val)  # keep the column's name when its expression moves in
            target.val = new
            out.append(target)
        return tuple(out)

    def _sort(self, sort, chain: tuple[_Level, ...], outputs: set[str]):
        for item in sort or ():
            ref = item.node
            if isinstance(ref, ast.ColumnRef) and len(ref.fields) == 1 and column_fields(ref)[0] in outputs:
                continue  # ORDER BY name: an output column before an input column (SQL-92 rule)
            item.node = self.expr(ref, chain)
        return sort

    def expr(self, value, chain: tuple[_Level, ...]):
        if isinstance(value, tuple | list):
            return type(value)(self.expr(v, chain) for v in value)
        if isinstance(value, ast.ColumnRef):
            replaced = self.on_ref(value, chain)
            return value if replaced is None else replaced
        if isinstance(value, ast.SubLink):
            value.testexpr = self.expr(value.testexpr, chain)
            self._select(value.subselect, chain)
            return value
        if isinstance(value, ast.SelectStmt):
            self._select(value, chain)
            return value
        if isinstance(value, ast.Node):
            for name in value.__slots__:
                current = getattr(value, name, None)
                if isinstance(current, ast.Node | tuple | list):
                    setattr(value, name, self.expr(current, chain))
        return value


def _split(ref: ast.ColumnRef) -> tuple[str | None, str | None]:
    """(qualifier, column) of a reference; column None for ``*``."""
    fields = column_fields(ref)
    return (fields[-2] if len(fields) > 1 else None), fields[-1]


# -- what is known of each FROM item's columns ----------------------------------------------------

Evidence = dict[tuple[str, str], set[str]]


def _table_key(ref: ast.RangeVar) -> tuple[str, str]:
    # an unqualified name is taken to be public's (the schema view definitions print)
    return (ref.schemaname or "public", ref.relname)


def _known(item: ast.Node, level: _Level, evidence: Evidence) -> tuple[set[str], bool]:
    """The columns ``item`` is known to have, and whether that is all of them."""
    if isinstance(item, ast.RangeVar):
        if item.schemaname is None and item.relname in level.ctes:
            cte = level.ctes[item.relname]
            names, complete = output_names(cte.ctequery)
            given = [c.sval for c in cte.aliascolnames or ()]
            return set(given + names[len(given) :]), complete
        return set(evidence.get(_table_key(item), ())), False
    if isinstance(item, ast.RangeSubselect):
        names, complete = output_names(item.subquery)
        return set(_renamed(names, item.alias)), complete
    if isinstance(item, ast.RangeFunction):
        if item.alias is not None and item.alias.colnames:
            return {c.sval for c in item.alias.colnames}, True
        defined = [d for func in item.functions or () for d in func[1:] if d]
        if defined and not item.ordinality:
            return {c.colname for cols in defined for c in cols}, True
    return set(), False


def _provides(level: _Level, column: str, evidence: Evidence, ignore: set[int] | None = None) -> bool | None:
    """Whether some FROM item of ``level`` has ``column``: True, False, or None (cannot tell).
    ``ignore``: ids of items not to count."""
    unsure = False
    for item in level.items.values():
        if ignore and id(item) in ignore:
            continue
        known, complete = _known(item, level, evidence)
        if column in known:
            return True
        unsure = unsure or not complete
    return None if unsure else False


def _evidence(stmt: ast.SelectStmt, views: dict[str, str]) -> Evidence:
    """Columns each base table is known to have: those that the statement and the views'
    definitions read qualified by the table's name or alias."""
    found: Evidence = {}
    for definition in views.values():
        for key, column in _definition_evidence(definition):
            found.setdefault(key, set()).add(column)
    _record(stmt, found)
    return found


@functools.lru_cache(maxsize=1024)
def _definition_evidence(definition: str) -> tuple[tuple[tuple[str, str], str], ...]:
    try:
        body = parse_sql(definition)[0].stmt
    except ParseError:
        return ()
    if not isinstance(body, ast.SelectStmt):
        return ()
    if body.op.name == "SETOP_NONE" and body.fromClause and _shape_blocker(body) is None:
        _qualify_single(body)
    found: Evidence = {}
    _record(body, found)
    return tuple((key, column) for key, columns in found.items() for column in sorted(columns))


def _record(select: ast.SelectStmt, found: Evidence) -> None:
    def on_ref(ref: ast.ColumnRef, chain: tuple[_Level, ...]) -> None:
        qualifier, column = _split(ref)
        if qualifier is None or column is None:
            return None
        for level in chain:
            item = level.items.get(qualifier)
            if item is not None:
                if isinstance(item, ast.RangeVar) and item.relname not in level.ctes:
                    found.setdefault(_table_key(item), set()).add(column)
                return None
        return None

    _Scoped(on_ref, roots=True).run(select)


# -- merging one view -----------------------------------------------------------------------------


def _merge(stmt: ast.SelectStmt, site: _Site, evidence: Evidence, hidden: set[int]) -> None:
    sub = site.sub
    body = sub.subquery
    _qualify_single(body)
    _rename_clashes(stmt, sub)
    columns = _view_columns(body, sub.alias)
    _ViewRefs(stmt, sub, columns, evidence, hidden | {id(sub)}).run()
    _splice(site, list(body.fromClause))
    hidden.update(id(item) for item in named_items(body.fromClause).values())
    stmt.whereClause = and_of(conjuncts(body.whereClause) + conjuncts(stmt.whereClause))


def _qualify_single(body: ast.SelectStmt) -> None:
    """pg_get_viewdef leaves columns unqualified when a level reads one FROM item: qualify them,
    since the query they move into may read other tables with the same column names."""
    if len(body.fromClause) != 1 or isinstance(body.fromClause[0], ast.JoinExpr):
        return
    name = item_name(body.fromClause[0])
    if name is None:
        return

    def on_ref(ref: ast.ColumnRef, chain: tuple[_Level, ...]) -> ast.Node | None:
        if len(chain) == 1 and len(ref.fields) == 1 and isinstance(ref.fields[0], ast.String):
            return ast.ColumnRef(fields=(ast.String(sval=name), ref.fields[0]))
        return None

    _Scoped(on_ref).run(body)


def _splice(site: _Site, items: list[ast.Node]) -> None:
    if isinstance(site.key, int):
        stmt = site.container
        stmt.fromClause = stmt.fromClause[: site.key] + tuple(items) + stmt.fromClause[site.key + 1 :]
        return
    joined = items[0]
    for item in items[1:]:  # several items in a join's place: a CROSS JOIN chain (LATERAL kept)
        joined = ast.JoinExpr(jointype=JoinType.JOIN_INNER, isNatural=False, larg=joined, rarg=item)
    setattr(site.container, site.key, joined)


class _ViewRefs:
    """Replaces the references that reach the view ``sub`` by its columns' expressions."""

    def __init__(
        self,
        stmt: ast.SelectStmt,
        sub: ast.RangeSubselect,
        columns: dict[str, ast.Node],
        evidence: Evidence,
        others: set[int],
    ) -> None:
        self.stmt = stmt
        self.others = others  # query-level items whose columns do not count (the view, merged views)
        self.sub = sub
        self.alias = sub.alias.aliasname
        self.columns = columns
        self.evidence = evidence

    def run(self) -> None:
        _Scoped(self.ref, self.star).run(self.stmt)

    def _reaches(self, qualifier: str, chain: tuple[_Level, ...]) -> bool:
        """``qualifier`` names the view: no level between the reference and the query rebinds it."""
        return qualifier == self.alias and not any(qualifier in level.items for level in chain[:-1])

    def _column(self, column: str) -> ast.Node:
        if column not in self.columns:
            raise PlanError(UNDEFINED_COLUMN, f'column {self.alias}."{column}" does not exist')
        return copy_node(self.columns[column])

    def ref(self, ref: ast.ColumnRef, chain: tuple[_Level, ...]) -> ast.Node | None:
        qualifier, column = _split(ref)
        if qualifier is not None:
            if not self._reaches(qualifier, chain):
                return None
            if column is None:
                raise PlanError(
                    FEATURE_NOT_SUPPORTED,
                    f"{self.alias}.* as a value (a whole row of a view) cannot be merged",
                    hint="name the columns you need",
                )
            return self._column(column)
        if column is None:
            return None
        if column not in self.columns:
            if column == self.alias and self._reaches(column, chain):
                raise PlanError(
                    FEATURE_NOT_SUPPORTED,
                    f"{self.alias} as a value (a whole row of a view) cannot be merged",
                    hint="name the columns you need",
                )
            return None
        return self._unqualified(column, chain)

    def _unqualified(self, column: str, chain: tuple[_Level, ...]) -> ast.Node | None:
        for level in chain[:-1]:
            provided = _provides(level, column, self.evidence)
            if provided:
                return None  # the subquery's own column
            if provided is None:
                raise PlanError(
                    FEATURE_NOT_SUPPORTED,
                    f'column "{column}" inside a subquery may name the column of the view {self.alias} '
                    f"or a column of {', '.join(sorted(level.items))}, and SieveDB does not guess",
                    hint=f"qualify it: {self.alias}.{column} for the view's column, "
                    f"or <table>.{column} for the subquery's",
                )
        if _provides(chain[-1], column, self.evidence, self.others):
            raise PlanError(AMBIGUOUS_COLUMN, f'column reference "{column}" is ambiguous')
        return self._column(column)

    def star(self, ref: ast.ColumnRef, chain: tuple[_Level, ...]) -> list[ast.ResTarget] | None:
        qualifier, _ = _split(ref)
        if qualifier is not None:
            return self._expand() if self._reaches(qualifier, chain) else None
        if len(chain) != 1:
            return None  # a subquery's * reads the subquery's own FROM
        return [t for item in _leaves(self.stmt.fromClause) for t in self._star_of(item)]

    def _expand(self) -> list[ast.ResTarget]:
        return [ast.ResTarget(name=name, val=copy_node(expr)) for name, expr in self.columns.items()]

    def _star_of(self, item: ast.Node) -> list[ast.ResTarget]:
        if item is self.sub:
            return self._expand()
        name = item_name(item)
        if name is None:
            raise PlanError(
                FEATURE_NOT_SUPPORTED, "SELECT * over a view and an unnamed FROM item cannot be merged"
            )
        star = ast.ColumnRef(fields=(ast.String(sval=name), ast.A_Star()))
        return [ast.ResTarget(val=star)]


def _leaves(items) -> Iterator[ast.Node]:
    """FROM items in the order ``*`` lists their columns."""
    for item in items or ():
        if isinstance(item, ast.JoinExpr):
            if item.alias is not None or item.usingClause or item.isNatural:
                raise PlanError(
                    FEATURE_NOT_SUPPORTED,
                    "SELECT * over a view and a join with USING, NATURAL or an alias cannot be merged",
                    hint="list the columns you need",
                )
            yield from _leaves((item.larg, item.rarg))
        else:
            yield item


# -- fresh names for the view's FROM items --------------------------------------------------------


def _rename_clashes(stmt: ast.SelectStmt, sub: ast.RangeSubselect) -> None:
    """Give the view's FROM items fresh aliases where the statement uses their names elsewhere
    (at any depth: a view column's expression may move into a subquery)."""
    body = sub.subquery
    items, qualifiers = _name_sets(stmt, skip=sub)
    taken = items | (qualifiers - {sub.alias.aliasname})
    every = taken.union(*_name_sets(sub, skip=None))
    renames = {}
    for name, item in named_items(body.fromClause).items():
        if name in taken:
            fresh = _fresh(name, every)
            every.add(fresh)
            renames[name] = fresh
            _realias(item, name, fresh)
    if not renames:
        return

    def on_ref(ref: ast.ColumnRef, chain: tuple[_Level, ...]) -> ast.Node | None:
        qualifier, _ = _split(ref)
        if qualifier not in renames or len(ref.fields) != 2:
            return None
        if any(qualifier in level.items for level in chain[:-1]):
            return None  # rebound inside a subquery of the view
        return ast.ColumnRef(fields=(ast.String(sval=renames[qualifier]), ref.fields[1]))

    _Scoped(on_ref).run(body)


def _realias(item: ast.Node, old: str, fresh: str) -> None:
    if isinstance(item, ast.RangeFunction) and item.alias is None:
        # an alias would rename a scalar function's column too: not safe without the catalog
        raise PlanError(
            FEATURE_NOT_SUPPORTED,
            f"the view reads the function {old} under a name the query uses too",
            hint=f"give {old} another alias in the query",
        )
    colnames = item.alias.colnames if item.alias is not None else None
    item.alias = ast.Alias(aliasname=fresh, colnames=colnames)


def _fresh(name: str, used: set[str]) -> str:
    n = 1
    while f"{name}_{n}" in used:
        n += 1
    return f"{name}_{n}"


def _name_sets(node: ast.Node, skip: ast.Node | None) -> tuple[set[str], set[str]]:
    """(FROM item names, reference qualifiers) in ``node``, leaving ``skip`` out: one pass."""
    items: set[str] = set()
    qualifiers: set[str] = set()
    for found in _nodes(node, skip):
        if isinstance(found, ast.ColumnRef):
            qualifiers.update(f for f in column_fields(found)[:-1] if f is not None)
        elif isinstance(found, ast.JoinExpr):
            if found.alias is not None:
                items.add(found.alias.aliasname)
        elif isinstance(found, ast.RangeVar | ast.RangeSubselect | ast.RangeFunction):
            items.update(named_items([found]))
    return items, qualifiers


def _nodes(node: ast.Node, skip: ast.Node | None) -> Iterator[ast.Node]:
    if node is skip:
        return
    yield node
    for name in node.__slots__:
        yield from _values(getattr(node, name, None), skip)


def _values(value, skip: ast.Node | None) -> Iterator[ast.Node]:
    if isinstance(value, ast.Node):
        yield from _nodes(value, skip)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _values(item, skip)
