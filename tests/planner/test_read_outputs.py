"""planner.read_outputs as SQL in, SQL out (no server): which calls read a row map, and how."""

from __future__ import annotations

import pytest
from pglast import parse_sql

from planner.model_spec import Binding, ModelSpec
from planner.read_outputs import read_outputs_sql, wanted_maps
from planner.row_maps import MapKey, RowMap
from planner.sqltypes import SqlType

TABLE = "sieve_cache.m7_v1_r16384_c2"


def spec(name: str, args: int = 1, returns_table: bool = False) -> ModelSpec:
    return ModelSpec(
        name=name,
        args=[(f"a{i}", SqlType("float4", True)) for i in range(args)],
        returns_table=returns_table,
        bindings=[Binding("value", SqlType("int4"), "label")],
        path="m.onnx",
        id=7,
    )


SPECS = {"m": spec("m"), "n": spec("n"), "two": spec("two", 2), "det": spec("det", returns_table=True)}


def entry(model: str, relation: tuple[str, ...], columns: tuple[str, ...], table_columns=("id", "x", "y")):
    key = MapKey(model, relation, columns)
    return key, RowMap(key, TABLE, 16384, ("value",), table_columns)


MAPS = dict(
    [
        entry("m", ("t",), ("x",)),
        entry("n", ("t",), ("x",)),
        entry("m", ("public", "t"), ("x",)),
        entry("two", ("t",), ("x", "y")),
        entry("m", ("u",), ("x",), table_columns=("x", "sieve_m1_tid")),
    ]
)


def join(alias: str = "sieve_m1", ref: str = "t") -> str:
    return (
        f"LEFT JOIN (SELECT r.tid AS {alias}_tid, r.xid AS {alias}_xid, r.value AS {alias}_value "
        f"FROM {TABLE} AS r WHERE r.filenode = (SELECT pg_catalog.pg_relation_filenode("
        f"CAST(16384 AS pg_catalog.oid))) AND r.ordinal = 0) AS {alias} ON {alias}_tid = {ref}.ctid "
        f"AND {ref}.tableoid = 16384"
    )


def read(call: str, alias: str = "sieve_m1", ref: str = "t") -> str:
    return f"CASE WHEN {alias}_xid = {ref}.xmin THEN {alias}_value ELSE {call} END"


def rewrite(sql: str) -> str | None:
    return read_outputs_sql([parse_sql(sql)[0].stmt], SPECS, MAPS)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "SELECT count(*) FROM t WHERE m(x) = 3",
            f"SELECT count(*) FROM t {join()} WHERE {read('m(x)')} = 3",
        ),
        # the output column keeps the call's name; * keeps meaning the table's columns
        (
            "SELECT *, m(t.x) FROM t WHERE id < 10",
            f"SELECT t.*, {read('m(t.x)')} AS m FROM t {join()} WHERE id < 10",
        ),
        ("SELECT m(x)::text FROM t", f"SELECT CAST({read('m(x)')} AS text) AS m FROM t {join()}"),
        # an alias, a schema
        (
            "SELECT a.id FROM t AS a WHERE m(a.x) > 1",
            f"SELECT a.id FROM t AS a {join(ref='a')} WHERE {read('m(a.x)', ref='a')} > 1",
        ),
        ("SELECT sum(m(x)) FROM public.t", f"SELECT sum({read('m(x)')}) FROM public.t {join()}"),
        # two models, one join each; a model with two arguments
        (
            "SELECT m(x), n(x) FROM t",
            f"SELECT {read('m(x)', 'sieve_m2')} AS m, {read('n(x)')} AS n FROM t {join()} {join('sieve_m2')}",
        ),
        ("SELECT two(x, y) FROM t", f"SELECT {read('two(x, y)')} AS two FROM t {join()}"),
        # grouped: the same expression in the list and in GROUP BY
        (
            "SELECT m(x), count(*) FROM t GROUP BY m(x) ORDER BY m(x)",
            f"SELECT {read('m(x)')} AS m, count(*) FROM t {join()} "
            f"GROUP BY {read('m(x)')} ORDER BY {read('m(x)')}",
        ),
        # a subquery is a level of its own
        (
            "SELECT id FROM v WHERE id IN (SELECT id FROM t WHERE m(x) = 1)",
            f"SELECT id FROM v WHERE id IN (SELECT id FROM t {join()} WHERE {read('m(x)')} = 1)",
        ),
        # a name the statement or the table uses is not reused
        (
            "SELECT sieve_m1 FROM t WHERE m(x) = 1",
            f"SELECT sieve_m1 FROM t {join('sieve_m2')} WHERE {read('m(x)', 'sieve_m2')} = 1",
        ),
        ("SELECT m(x) FROM u", f"SELECT {read('m(x)', 'sieve_m2', 'u')} AS m FROM u {join('sieve_m2', 'u')}"),
        ("INSERT INTO out SELECT m(x) FROM t", f"INSERT INTO out SELECT {read('m(x)')} AS m FROM t {join()}"),
        (
            "CREATE TABLE out AS SELECT m(x) FROM t",
            f"CREATE TABLE out AS SELECT {read('m(x)')} AS m FROM t {join()}",
        ),
    ],
)
def test_calls_with_a_row_map_read_it_by_a_join(given: str, expected: str) -> None:
    assert rewrite(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        "SELECT m(x) FROM t FOR UPDATE",  # the join would lock the map's rows too
        "SELECT m(x) FROM t, w",  # several FROM items
        "SELECT m(x) FROM t JOIN w ON w.id = t.id",
        "SELECT m(x + 1) FROM t",  # not a plain column
        "SELECT m(w.x) FROM t",  # not this table's column
        "SELECT m(x) FROM other",  # no map
        "SELECT m(y) FROM t",
        "SELECT x, m(x) FROM t GROUP BY x",  # after grouping, only grouped expressions
        "SELECT id FROM t a(i, x) WHERE m(x) = 1",  # renamed columns
        "SELECT * FROM t, LATERAL det(t.x) AS d",  # a model returning rows
        "SELECT (SELECT m(t.x)) FROM t",  # a call in another level than its table
        "CREATE VIEW v AS SELECT m(x) FROM t",  # definitions keep the function
        "CREATE MATERIALIZED VIEW v AS SELECT m(x) FROM t",
        "SELECT m(x) FROM t; SELECT 1",
    ],
)
def test_other_shapes_are_left_to_the_function(given: str) -> None:
    statements = [raw.stmt for raw in parse_sql(given)]
    assert read_outputs_sql(statements, SPECS, MAPS) is None


def test_wanted_maps_name_the_calls_a_rewrite_could_serve() -> None:
    stmt = parse_sql("SELECT m(x), n(a.x) FROM t a WHERE two(x, y) > 0 AND m(x + 1) = 2")[0].stmt
    assert wanted_maps([stmt], SPECS) == {
        MapKey("m", ("t",), ("x",)),
        MapKey("n", ("t",), ("x",)),
        MapKey("two", ("t",), ("x", "y")),
    }


def test_the_statement_given_is_not_modified() -> None:
    stmt = parse_sql("SELECT m(x) FROM t")[0].stmt
    before = repr(stmt)
    assert read_outputs_sql([stmt], SPECS, MAPS) is not None
    assert repr(stmt) == before
