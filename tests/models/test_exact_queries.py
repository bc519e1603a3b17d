"""Exact answers over virtual tables equal the same SQL over an eagerly materialized table."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect

from tests.models.conftest import direct_run, label_function, label_view
from tests.support.model_files import cache_table

QUERIES = [
    # join between two virtual tables (two models over the same blobs)
    "select a.id, a.digit, b.proxy_digit from {v} a join {p} b on b.id = a.id "
    "where a.id < 150 and a.digit <> b.proxy_digit order by a.id",
    # GROUP BY on a model output
    "select digit, count(*), min(id) from {v} where id between 300 and 700 group by digit order by digit",
    # ORDER BY … LIMIT (needs every row that passes the filter)
    "select id, digit from {v} where id < 400 order by digit desc, id limit 7",
    # subquery and CTE
    "with sevens as (select id from {v} where digit = 7 and id < 900) "
    "select count(*) from digits d where d.id in (select id from sevens)",
    # window function over model outputs
    "select id, digit, rank() over (partition by digit order by id) from {v} "
    "where id between 1000 and 1060 order by id",
]


@pytest.fixture(scope="module")
def eager(world):
    oracle = direct_run(world.mlp_path, {"X": world.digits.x})["label"]
    proxy = direct_run(world.logreg_path, {"X": world.digits.x})["label"]
    with world.connect() as conn:
        label_function(conn, "exact_oracle")
        label_function(conn, "exact_proxy", "digits_logreg.onnx")
        label_view(conn, "exact_v", "exact_oracle")
        conn.execute(
            "create or replace view exact_p as select d.id, exact_proxy(d.pixels) as proxy_digit "
            "from digits d"
        )
        conn.execute("drop table if exists eager_v, eager_p")
        conn.execute("create table eager_v (id int primary key, digit int)")
        conn.execute("create table eager_p (id int primary key, proxy_digit int)")
        with conn.cursor().copy("copy eager_v from stdin") as copy:
            for i, d in enumerate(oracle.tolist()):
                copy.write_row((i, d))
        with conn.cursor().copy("copy eager_p from stdin") as copy:
            for i, d in enumerate(proxy.tolist()):
                copy.write_row((i, d))
    return world


@pytest.mark.parametrize("query", QUERIES)
def test_virtual_equals_eager(eager, query):
    with eager.connect() as conn:
        virtual = conn.execute(query.format(v="exact_v", p="exact_p")).fetchall()
        baseline = conn.execute(query.format(v="eager_v", p="eager_p")).fetchall()
    assert virtual == baseline
    assert virtual, "the query should return rows"


def test_clear_cache_forgets_outputs(eager):
    with eager.connect() as conn:
        conn.execute("select count(*) from exact_v where id < 20 and digit >= 0").fetchone()
        removed = conn.execute("select sieve.clear_cache('exact_oracle')").fetchone()[0]
        assert removed > 0
        table = cache_table(conn, "exact_oracle")
        assert conn.execute(f"select count(*) from {table}").fetchone() == (0,)
        assert conn.execute("select count(*) from exact_v where id < 20").fetchone() == (20,)


def test_sqlalchemy_reflects_the_view(eager):
    engine = create_engine(eager.server.dsn().replace("postgresql://", "postgresql+psycopg://"))
    try:
        columns = {c["name"]: str(c["type"]) for c in inspect(engine).get_columns("exact_v")}
        assert inspect(engine).get_view_names().count("exact_v") == 1
    finally:
        engine.dispose()
    assert columns == {"id": "INTEGER", "digit": "INTEGER"}
