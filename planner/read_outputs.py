"""Reading cached outputs by joins: the statement Postgres finally runs, with each model call the
planner could serve from a row map (planner.row_maps) read by a join on row identity.

Through the installed SQL function every row digests its input and looks it up again, for each
execution (~10 µs a row); a join on the row's tid hashes no input at all. In a level whose only
FROM item is a table ``t`` and a call ``m(t.x)`` of a scalar model has a row map::

    SELECT ... FROM t WHERE m(x) = 3
    SELECT ... FROM t LEFT JOIN (SELECT r.tid AS sieve_m1_tid, r.xid AS sieve_m1_xid, ...
        FROM <map> r WHERE r.filenode = <t's now> ...) AS sieve_m1 ON sieve_m1_tid = t.ctid ...
        WHERE CASE WHEN sieve_m1_xid = t.xmin THEN sieve_m1_value ELSE m(x) END = 3

A row whose tuple version has an entry reads its output there; any other row (a NULL input, a
row written since, a table rewritten since) calls the function as before, so STRICT, the
not-materialized error and lenient reads are the function's own. The join adds no rows (one
entry per tid in a relfilenode) and no columns (``*`` becomes ``t.*``, a call's output column
keeps its name, the map's columns get names nothing else in the statement starts with).
Statements that lock rows (FOR UPDATE) or define objects are returned unchanged, as are calls in
levels of any other shape.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pglast import ast, parse_sql
from pglast.enums import JoinType, ObjectType

from planner.install import quote_ident
from planner.model_spec import ModelSpec
from planner.rewrite.ast_util import AGGREGATES, copy_node, model_name, render, walk
from planner.row_maps import MapKey, RowMap, call_key, filenode_sql

# Statements whose SELECTs run now and once; anything else (views, PREPARE, cursors...) keeps
# the function calls.
_RUNS_NOW = (ast.SelectStmt, ast.InsertStmt, ast.CreateTableAsStmt)
_LEVEL_FIELDS = ("targetList", "whereClause", "groupClause", "havingClause", "sortClause", "windowClause")


@dataclass(frozen=True)
class _Call:
    level: ast.SelectStmt
    call: ast.FuncCall
    key: MapKey


def wanted_maps(statements: list[ast.Node], specs: Mapping[str, ModelSpec]) -> frozenset[MapKey]:
    """The calls of a statement that read_outputs could serve from row maps."""
    if len(statements) != 1:
        return frozenset()
    return _memo(
        ("wanted", _models_of(specs)), statements[0], lambda s: frozenset(f.key for f in _calls(s, specs))
    )


def read_outputs_sql(
    statements: list[ast.Node], specs: Mapping[str, ModelSpec], maps: Mapping[MapKey, RowMap]
) -> str | None:
    """The statement's SQL with calls read from ``maps``; None when nothing changed."""
    if len(statements) != 1 or not maps:
        return None

    def rewritten_sql(stmt: ast.Node) -> str | None:
        rewritten = read_outputs(stmt, specs, maps)
        return None if rewritten is stmt else render(rewritten)

    key = ("sql", _models_of(specs), tuple(sorted(maps.items(), key=lambda kv: repr(kv[0]))))
    return _memo(key, statements[0], rewritten_sql)


# Statements repeat (dashboards): the planner keeps their trees (planner.Planner._plans), and
# their rewrites are kept here by tree, as long as it is (the entry holds it), LRU-bounded.
_MEMO: OrderedDict = OrderedDict()
_MEMO_SIZE = 256


def _memo(key: tuple, stmt: ast.Node, compute):
    entry = (id(stmt), key)
    found = _MEMO.get(entry)
    if found is not None and found[0] is stmt:
        _MEMO.move_to_end(entry)
        return found[1]
    value = compute(stmt)
    _MEMO[entry] = (stmt, value)
    if len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return value


def _models_of(specs: Mapping[str, ModelSpec]) -> tuple:
    return tuple(sorted((name, spec.id, spec.version) for name, spec in specs.items()))


def read_outputs(stmt: ast.Node, specs: Mapping[str, ModelSpec], maps: Mapping[MapKey, RowMap]) -> ast.Node:
    """``stmt`` with the calls ``maps`` serve read by joins (a copy; ``stmt`` is not modified),
    or ``stmt`` itself when there is none."""
    if not any(found.key in maps for found in _calls(stmt, specs)):
        return stmt
    stmt = copy_node(stmt)
    taken = _names(stmt)
    by_level: dict[int, list[_Call]] = {}
    for found in _calls(stmt, specs):
        if found.key in maps:
            by_level.setdefault(id(found.level), []).append(found)
    for calls in by_level.values():
        _rewrite_level(calls[0].level, calls, specs, maps, taken)
    return stmt


# -- finding the calls ------------------------------------------------------------------------------


def _calls(stmt: ast.Node, specs: Mapping[str, ModelSpec]) -> Iterator[_Call]:
    if not isinstance(stmt, _RUNS_NOW) or _defines_a_view(stmt):
        return
    for node in walk(stmt):
        if isinstance(node, ast.SelectStmt):
            yield from _level_calls(node, specs)


def _defines_a_view(stmt: ast.Node) -> bool:
    """CREATE MATERIALIZED VIEW keeps its query for every REFRESH: it keeps the function calls."""
    return isinstance(stmt, ast.CreateTableAsStmt) and stmt.objtype != ObjectType.OBJECT_TABLE


def _level_calls(level: ast.SelectStmt, specs: Mapping[str, ModelSpec]) -> Iterator[_Call]:
    items = level.fromClause or ()
    if len(items) != 1 or not isinstance(items[0], ast.RangeVar) or level.lockingClause:
        return
    found, refused = [], set()
    for node, fine in _occurrences(level):
        if not isinstance(node, ast.FuncCall) or not _plain_call(node):
            continue
        name = model_name(node, set(specs))
        if name is None or specs[name].returns_table or len(node.args or ()) != len(specs[name].args):
            continue
        key = call_key(name, list(node.args), items[0])
        if key is not None:
            found.append(_Call(level, node, key))
            if not fine:
                refused.add(key)
    yield from (f for f in found if f.key not in refused)


def _occurrences(level: ast.SelectStmt) -> Iterator[tuple[ast.Node, bool]]:
    """The level's own nodes (not those of levels nested in it), each with whether a map read
    may replace it there: anywhere in an ungrouped level; in a grouped one, before grouping
    (WHERE, GROUP BY), inside an aggregate, or as a whole GROUP BY item."""
    grouped = bool(level.groupClause or level.havingClause) or any(
        _is_aggregate(n) for f in ("targetList", "sortClause") for n in _own_nodes(getattr(level, f, None))
    )
    groups = {render(g) for g in level.groupClause or () if isinstance(g, ast.Node)}
    for field in _LEVEL_FIELDS:
        early = not grouped or field in ("whereClause", "groupClause")
        for node, in_aggregate in _own_nodes(getattr(level, field, None), with_aggregates=True):
            yield node, early or in_aggregate or render(node) in groups


def _is_aggregate(node) -> bool:
    if isinstance(node, tuple):
        node = node[0]
    return isinstance(node, ast.FuncCall) and (
        bool(node.agg_star or node.agg_distinct or node.agg_order or node.agg_filter)
        or node.over is None
        and node.funcname[-1].sval.lower() in AGGREGATES
    )


def _plain_call(call: ast.FuncCall) -> bool:
    return not (
        call.agg_star
        or call.agg_distinct
        or call.agg_order
        or call.agg_filter
        or call.over
        or call.func_variadic
    ) and all(isinstance(a, ast.ColumnRef) for a in call.args or ())


def _own_nodes(value, with_aggregates: bool = False) -> Iterator:
    """Nodes of a level's expressions (not of the levels nested in them); ``with_aggregates``:
    (node, whether it sits in an aggregate's arguments) pairs."""
    stack = [(n, False) for n in _as_nodes(value)]
    while stack:
        node, inside = stack.pop()
        yield (node, inside) if with_aggregates else node
        if isinstance(node, ast.SelectStmt):
            continue
        inside = inside or _is_aggregate(node)
        for name in node.__slots__:
            stack.extend((n, inside) for n in _as_nodes(getattr(node, name, None)))


def _as_nodes(value) -> list[ast.Node]:
    if isinstance(value, ast.Node):
        return [value]
    if isinstance(value, tuple | list):
        return [n for item in value for n in _as_nodes(item)]
    return []


def _names(stmt: ast.Node) -> set[str]:
    """Every identifier the statement spells: new names must differ from all of them."""
    names = set()
    for node in walk(stmt):
        if isinstance(node, ast.String):
            names.add(node.sval)
        elif isinstance(node, ast.Alias):
            names.add(node.aliasname)
            names.update(c.sval for c in node.colnames or ())
        elif isinstance(node, ast.RangeVar):
            names.add(node.relname)
        elif isinstance(node, ast.ResTarget) and node.name:
            names.add(node.name)
    return names


# -- rewriting one level ----------------------------------------------------------------------------


def _rewrite_level(
    level: ast.SelectStmt,
    calls: list[_Call],
    specs: Mapping[str, ModelSpec],
    maps: Mapping[MapKey, RowMap],
    taken: set[str],
) -> None:
    table = level.fromClause[0]
    refname = table.alias.aliasname if table.alias is not None else table.relname
    joined: ast.Node = table
    reads: dict[int, ast.Node] = {}
    aliases: dict[MapKey, str] = {}
    for found in calls:
        rowmap = maps[found.key]
        if found.key not in aliases:
            aliases[found.key] = _fresh("sieve_m", taken, rowmap.table_columns)
            joined = _join(joined, rowmap, aliases[found.key], refname)
        reads[id(found.call)] = _read(aliases[found.key], rowmap, found.call, refname)
    level.fromClause = (joined,)
    level.targetList = tuple(_named(_star_of(t, refname), reads) for t in level.targetList or ())
    for name in _LEVEL_FIELDS:
        value = getattr(level, name, None)
        if value is not None:
            setattr(level, name, _replace(value, reads))


def _fresh(prefix: str, taken: set[str], columns: tuple[str, ...]) -> str:
    """``prefix<n>``, with no identifier of the statement or column of the table starting so."""
    n = 1
    while any(name.startswith(f"{prefix}{n}") for name in (*taken, *columns)):
        n += 1
    taken.add(f"{prefix}{n}")
    return f"{prefix}{n}"


def _join(left: ast.Node, rowmap: RowMap, alias: str, refname: str) -> ast.JoinExpr:
    """``left LEFT JOIN`` the map's entries of the table's current files, by tid alone (one entry
    per tid there: the hash key stays small), under names only this rewrite uses."""
    outputs = ", ".join(f'r."{c}" AS "{alias}_{c}"' for c in rowmap.columns)
    sub = (
        f'SELECT r.tid AS "{alias}_tid", r.xid AS "{alias}_xid", {outputs} FROM {rowmap.table} r '
        f"WHERE r.filenode = {filenode_sql(rowmap.relid)} AND r.ordinal = 0"
    )
    ref = quote_ident(refname)
    on = f'"{alias}_tid" = {ref}.ctid AND {ref}.tableoid = {rowmap.relid}'
    template = parse_sql(f"SELECT 1 FROM x LEFT JOIN ({sub}) AS {alias} ON {on}")[0].stmt.fromClause[0]
    return ast.JoinExpr(jointype=JoinType.JOIN_LEFT, larg=left, rarg=template.rarg, quals=template.quals)


def _read(alias: str, rowmap: RowMap, call: ast.FuncCall, refname: str) -> ast.Node:
    """The call's value: the entry when it belongs to this tuple version (same xmin), else the
    call itself."""
    column = rowmap.columns[0]
    case = (
        parse_sql(
            f'SELECT CASE WHEN "{alias}_xid" = {quote_ident(refname)}.xmin THEN "{alias}_{column}" END'
        )[0]
        .stmt.targetList[0]
        .val
    )
    case.defresult = copy_node(call)
    return case


def _star_of(target: ast.ResTarget, refname: str) -> ast.ResTarget:
    """``*`` keeps meaning the table's columns once the level reads a map too."""
    value = target.val
    if (
        isinstance(value, ast.ColumnRef)
        and len(value.fields) == 1
        and isinstance(value.fields[0], ast.A_Star)
    ):
        return ast.ResTarget(val=ast.ColumnRef(fields=(ast.String(sval=refname), ast.A_Star())))
    return target


def _named(target: ast.ResTarget, reads: dict[int, ast.Node]) -> ast.ResTarget:
    """A target that Postgres names after the call keeps that name (a CASE would be "case")."""
    if target.name is None and (name := _call_name(target.val, reads)) is not None:
        target.name = name
    return target


def _call_name(value, reads: dict[int, ast.Node]) -> str | None:
    if id(value) in reads:
        return value.funcname[-1].sval
    if isinstance(value, ast.TypeCast | ast.CollateClause):  # named after what they convert
        return _call_name(value.arg, reads)
    return None


def _replace(value, reads: dict[int, ast.Node]):
    """``value`` with the calls in ``reads`` replaced (nested levels left alone)."""
    if isinstance(value, tuple | list):
        return type(value)(_replace(v, reads) for v in value)
    if not isinstance(value, ast.Node):
        return value
    if id(value) in reads:
        return reads[id(value)]
    if isinstance(value, ast.SelectStmt):
        return value
    for name in value.__slots__:
        setattr(value, name, _replace(getattr(value, name, None), reads))
    return value
