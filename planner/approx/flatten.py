"""Approximate queries over model views: merge each simple view into the query that reads it.

``SELECT id FROM digit_predictions WHERE digit = 7`` with ``digit_predictions`` defined as
``SELECT d.id, digit_oracle(d.pixels) AS digit FROM digits d`` becomes
``SELECT d.id AS id FROM digits d WHERE digit_oracle(d.pixels) = 7``: the view's FROM items join
the query's, its WHERE joins the query's WHERE, and every reference to a view column is replaced by
the column's defining expression. The approximate operators then see a model predicate over base
tables (rows keyed by ctid). Only views Postgres could flatten too are merged (no grouping,
DISTINCT, LIMIT, set operations or window functions), and only at the top FROM level or as an
argument of an inner join.
"""

from __future__ import annotations

from pglast import ast
from pglast.enums import BoolExprType, JoinType

from planner.outcome import PlanError
from planner.rewrite.ast_util import is_plain_select as _simple
from planner.rewrite.ast_util import output_columns as _output_columns
from planner.rewrite.inline_views import inline_views

FEATURE_NOT_SUPPORTED = "0A000"


def flatten_views(stmt: ast.SelectStmt, views: dict[str, str]) -> bool:
    """Merge the model views ``stmt`` reads into it, in place; True when any was merged."""
    if not views or not stmt.fromClause:
        return False
    inline_views(stmt, views)
    merged = False
    while True:
        found = _next_subselect(stmt)
        if found is None:
            return merged
        _merge(stmt, *found)
        merged = True


def _next_subselect(stmt: ast.SelectStmt):
    """(container, index, RangeSubselect) of the next mergeable subquery, or None."""
    for i, item in enumerate(stmt.fromClause):
        if isinstance(item, ast.RangeSubselect) and _mergeable(item):
            return stmt, i, item
        if isinstance(item, ast.JoinExpr):
            found = _in_join(item)
            if found is not None:
                return found
    return None


def _in_join(join: ast.JoinExpr):
    if join.jointype != JoinType.JOIN_INNER:
        return None
    for side in ("larg", "rarg"):
        arg = getattr(join, side)
        if isinstance(arg, ast.RangeSubselect) and _mergeable(arg):
            return join, side, arg
        if isinstance(arg, ast.JoinExpr):
            found = _in_join(arg)
            if found is not None:
                return found
    return None


def _mergeable(sub: ast.RangeSubselect) -> bool:
    query = sub.subquery
    if sub.lateral or not _simple(query) or not query.fromClause or query.withClause is not None:
        return False
    if sub.alias is not None and sub.alias.colnames:
        return False  # renamed columns: not merged (rare for views)
    return all(isinstance(i, ast.RangeVar | ast.JoinExpr) for i in query.fromClause)


def _merge(stmt: ast.SelectStmt, container, where, sub: ast.RangeSubselect) -> None:
    query = sub.subquery
    alias = sub.alias.aliasname if sub.alias is not None else None
    if len(query.fromClause) == 1 and isinstance(query.fromClause[0], ast.RangeVar):
        # pg_get_viewdef leaves columns unqualified when the view reads one table: qualify them,
        # since the query they move into may read other tables with the same column names
        _qualify(query, _name(query.fromClause[0]))
    columns = _output_columns(query)
    inner_names = {_name(i) for i in query.fromClause}
    outer_names = _outer_names(stmt, skip=sub)
    clash = inner_names & outer_names
    if clash:
        raise PlanError(
            FEATURE_NOT_SUPPORTED,
            f"the view {alias} reads {sorted(clash)[0]}, a name the query uses too",
            hint="give the query's tables other aliases",
        )
    items = list(query.fromClause)
    if container is stmt:
        stmt.fromClause = stmt.fromClause[:where] + tuple(items) + stmt.fromClause[where + 1 :]
    else:
        if len(items) != 1:
            raise PlanError(
                FEATURE_NOT_SUPPORTED,
                f"the view {alias} reads several tables and sits in a JOIN: list it in FROM instead",
            )
        setattr(container, where, items[0])
    sole = len(stmt.fromClause) == 1 and container is stmt
    replacer = _Replacer(alias, columns, query.targetList, sole)
    stmt.targetList = replacer.targets(stmt.targetList or ())
    for name in ("whereClause", "groupClause", "sortClause", "havingClause", "fromClause"):
        value = getattr(stmt, name, None)
        if value is not None:
            setattr(stmt, name, replacer.value(value))
    if query.whereClause is not None:
        parts = [query.whereClause] + ([stmt.whereClause] if stmt.whereClause is not None else [])
        stmt.whereClause = (
            parts[0] if len(parts) == 1 else ast.BoolExpr(boolop=BoolExprType.AND_EXPR, args=tuple(parts))
        )


def _qualify(query: ast.SelectStmt, relation: str) -> None:
    def walk(value):
        if isinstance(value, ast.ColumnRef):
            if len(value.fields) == 1 and isinstance(value.fields[0], ast.String):
                return ast.ColumnRef(fields=(ast.String(sval=relation), value.fields[0]))
            return value
        if isinstance(value, tuple):
            return tuple(walk(v) for v in value)
        if not isinstance(value, ast.Node) or isinstance(value, ast.SelectStmt | ast.SubLink):
            return value
        for name in value.__slots__:
            current = getattr(value, name, None)
            if isinstance(current, ast.Node | tuple):
                setattr(value, name, walk(current))
        return value

    for target in query.targetList or ():
        if target.name is None and isinstance(target.val, ast.ColumnRef):
            target.name = _output_name(target.val)
        target.val = walk(target.val)
    if query.whereClause is not None:
        query.whereClause = walk(query.whereClause)


def _name(item) -> str | None:
    if isinstance(item, ast.RangeVar):
        return item.alias.aliasname if item.alias is not None else item.relname
    if isinstance(item, ast.RangeSubselect):
        return item.alias.aliasname if item.alias is not None else None
    return None


def _outer_names(stmt: ast.SelectStmt, skip) -> set[str]:
    names: set[str] = set()

    def walk(item) -> None:
        if item is skip:
            return
        if isinstance(item, ast.JoinExpr):
            walk(item.larg)
            walk(item.rarg)
        else:
            name = _name(item)
            if name is not None:
                names.add(name)

    for item in stmt.fromClause:
        walk(item)
    return names


class _Replacer:
    """Replaces references to the view's columns by their defining expressions."""

    def __init__(self, alias: str | None, columns: dict, targets, sole: bool) -> None:
        self.alias = alias
        self.columns = columns
        self.view_targets = targets or ()
        self.sole = sole

    def _column(self, node: ast.ColumnRef):
        fields = [f.sval if isinstance(f, ast.String) else None for f in node.fields]
        if len(fields) == 2 and fields[0] == self.alias and fields[1] in self.columns:
            return fields[1]
        if len(fields) == 1 and fields[0] in self.columns:
            return fields[0]
        if len(fields) == 2 and fields[0] == self.alias:
            raise PlanError(FEATURE_NOT_SUPPORTED, f"the view {self.alias} has no column {fields[1]}")
        return None

    def _star(self, node) -> bool:
        if not isinstance(node, ast.ColumnRef) or not isinstance(node.fields[-1], ast.A_Star):
            return False
        if len(node.fields) == 1:
            return self.sole
        first = node.fields[0]
        return isinstance(first, ast.String) and first.sval == self.alias

    def targets(self, targets) -> tuple:
        out = []
        for target in targets:
            val = target.val
            if self._star(val):
                for view_target in self.view_targets:
                    name = view_target.name or _output_name(view_target.val)
                    out.append(ast.ResTarget(name=name, val=view_target.val))
                continue
            name = target.name
            if name is None and isinstance(val, ast.ColumnRef):
                name = self._column(val)
            out.append(ast.ResTarget(name=name, val=self.value(val), indirection=target.indirection))
        return tuple(out)

    def value(self, value):
        if isinstance(value, ast.ColumnRef):
            column = self._column(value)
            return self.columns[column] if column is not None else value
        if isinstance(value, tuple):
            return tuple(self.value(v) for v in value)
        if not isinstance(value, ast.Node):
            return value
        for name in value.__slots__:
            current = getattr(value, name, None)
            if isinstance(current, ast.Node | tuple):
                replaced = self.value(current)
                if replaced is not current:
                    setattr(value, name, replaced)
        return value


def _output_name(val) -> str | None:
    if isinstance(val, ast.ColumnRef) and isinstance(val.fields[-1], ast.String):
        return val.fields[-1].sval
    return None
