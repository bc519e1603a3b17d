"""Views over model functions: real Postgres views that run the model only where queried."""

from __future__ import annotations

import subprocess

import numpy as np

from tests.models.conftest import direct_run, label_function, label_view
from tests.support.model_files import cache_table


def _latest_calls(conn, model: str) -> int:
    row = conn.execute(
        "select (model_calls->>%s)::int from sieve.query_log where model_calls ? %s "
        "order by query_id desc limit 1",
        (model, model),
    ).fetchone()
    return row[0]


def _setup(conn) -> None:
    label_function(conn, "view_oracle")
    conn.execute(
        "create or replace view view_predictions as select d.id, d.label as true_label, "
        "view_oracle(d.pixels) as digit from digits d"
    )


def test_view_query_runs_the_model_only_for_rows_the_predicate_keeps(world):
    expected = direct_run(world.mlp_path, {"X": world.digits.x})["label"]
    with world.connect() as conn:
        _setup(conn)
        rows = conn.execute(
            "select id, digit from view_predictions where id < 100 and digit = 7 order by id"
        ).fetchall()
        assert rows == [(i, 7) for i in range(100) if expected[i] == 7]
        assert _latest_calls(conn, "view_oracle") <= 100
        again = conn.execute(
            "select id, digit from view_predictions where id < 100 and digit = 7 order by id"
        )
        assert again.fetchall() == rows
        assert _latest_calls(conn, "view_oracle") == 0


def test_view_over_view_join_and_group_by_match_an_eager_baseline(world):
    expected = direct_run(world.mlp_path, {"X": world.digits.x})["label"]
    with world.connect() as conn:
        _setup(conn)
        conn.execute(
            "create or replace view view_sevens as select id, digit from view_predictions where digit = 7"
        )
        conn.execute("drop table if exists eager_predictions")
        conn.execute("create table eager_predictions (id int primary key, digit int)")
        with conn.cursor().copy("copy eager_predictions from stdin") as copy:
            for i, label in enumerate(expected.tolist()):
                copy.write_row((i, label))
        sevens = conn.execute(
            "select id from view_sevens where id between 500 and 700 order by id"
        ).fetchall()
        assert (
            sevens
            == conn.execute(
                "select id from eager_predictions where digit = 7 and id between 500 and 700 order by id"
            ).fetchall()
        )
        grouped = conn.execute(
            "select v.digit, count(*) from view_predictions v join digits d on d.id = v.id "
            "where v.id < 400 group by v.digit order by v.digit"
        ).fetchall()
        assert (
            grouped
            == conn.execute(
                "select digit, count(*) from eager_predictions where id < 400 group by digit order by digit"
            ).fetchall()
        )


def test_psql_describes_the_view(world, pg_bin):
    with world.connect() as conn:
        _setup(conn)
    out = subprocess.run(
        [str(pg_bin / "psql"), "-X", world.server.dsn(), "-c", r"\d view_predictions"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "true_label" in out and "digit" in out and "integer" in out


def test_prepared_statement_parameters_are_pushed_down(world):
    """Reused many times with different bounds: each execution runs only its own rows."""
    expected = direct_run(world.mlp_path, {"X": world.digits.x})["label"]
    with world.connect() as conn:
        _setup(conn)
        for low in range(1000, 1600, 50):
            rows = conn.execute(
                "select id, digit from view_predictions where id >= %s and id < %s order by id",
                (low, low + 50),
                prepare=True,
            ).fetchall()
            assert rows == [(i, int(expected[i])) for i in range(low, low + 50)]
            assert _latest_calls(conn, "view_oracle") <= 50


def test_limit_stops_early_and_returns_only_true_matches(world, pg_bin):
    """~10% of digits are 7s: LIMIT 10 must not run the model over the whole table."""
    expected = direct_run(world.mlp_path, {"X": world.digits.x})["label"]
    with world.connect() as conn:
        label_function(conn, "limit_oracle")
        label_view(conn, "limit_predictions", "limit_oracle")
    # psql speaks the simple protocol, where the planner may rewrite the statement it forwards.
    import subprocess

    done = subprocess.run(
        [
            str(pg_bin / "psql"),
            "-X",
            "-At",
            world.server.dsn(),
            "-c",
            "select id, digit from limit_predictions where digit = 7 limit 10",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.split()
    rows = [tuple(map(int, line.split("|"))) for line in out]
    assert len(rows) == 10 and len({r[0] for r in rows}) == 10
    assert all(digit == 7 and expected[i] == 7 for i, digit in rows)
    with world.connect() as conn:
        calls = _latest_calls(conn, "limit_oracle")
        assert 10 <= calls < 0.25 * len(expected), calls


def test_chain_of_models_through_views_materializes_in_dependency_order(world):
    """A view whose model reads another view's model output: inner outputs are made first."""
    with world.connect() as conn:
        _setup(conn)
        conn.execute(
            "create or replace function digit_probability(pixels real[]) returns real[] language onnx "
            "as 'digits_mlp.onnx', '{\"output\": \"probabilities\"}'"
        )
        conn.execute(
            "create or replace view chain_inner as select d.id, digit_probability(d.pixels) as probs "
            "from digits d"
        )
        conn.execute(
            "create or replace view chain_outer as select c.id, view_oracle(c.probs[1:10] || c.probs "
            "|| c.probs || c.probs || c.probs || c.probs || array_fill(0::real, array[4])) as digit "
            "from chain_inner c"
        )
        rows = conn.execute("select id, digit from chain_outer where id < 30 order by id").fetchall()
    # the outer model's input: the inner model's 10 probabilities padded to the 64 pixels it takes
    probs = direct_run(world.mlp_path, {"X": world.digits.x[:30]})["probabilities"]
    padded = np.concatenate([probs, probs, probs, probs, probs, probs, np.zeros((30, 4))], axis=1)
    expected = direct_run(world.mlp_path, {"X": padded.astype(np.float32)})["label"]
    assert rows == [(i, int(expected[i])) for i in range(30)]


def test_limit_on_a_warm_cache_runs_no_model_and_on_null_tests_stays_exact(world, pg_bin):
    """A repeated LIMIT query is answered from the cache; a predicate that holds on NULL
    (IS NOT DISTINCT FROM) still returns only rows whose output really satisfies it."""
    import subprocess

    expected = direct_run(world.mlp_path, {"X": world.digits.x})["label"]
    with world.connect() as conn:
        label_function(conn, "warm_oracle")
        label_view(conn, "warm_predictions", "warm_oracle")

    def limit_query(sql: str) -> list[tuple[int, int]]:
        done = subprocess.run(
            [str(pg_bin / "psql"), "-X", "-At", world.server.dsn(), "-c", sql],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return [tuple(map(int, line.split("|"))) for line in done.stdout.split()]

    sql = "select id, digit from warm_predictions where digit = 4 limit 5"
    first = limit_query(sql)
    assert len(first) == 5 and all(expected[i] == 4 == d for i, d in first)
    limit_query(sql)
    with world.connect() as conn:
        assert _latest_calls(conn, "warm_oracle") == 0
    odd = limit_query(
        "select id, coalesce(digit, -1) from warm_predictions where digit is not distinct from 2 limit 5"
    )
    assert len(odd) == 5 and all(expected[i] == 2 == d for i, d in odd)


def test_a_table_that_shadows_a_model_view_on_the_search_path_is_what_the_query_reads(world):
    """The planner inlines a view only where the session's search_path finds SieveDB's view:
    a table of that name in an earlier schema is read as Postgres would, with no model run."""
    expected = direct_run(world.mlp_path, {"X": world.digits.x})["label"]
    with world.connect() as conn:
        _setup(conn)
        conn.execute("select sieve.clear_cache('view_oracle')")
        conn.execute("create schema shadowing")
        try:
            conn.execute("create table shadowing.view_predictions (id int, true_label int, digit int)")
            conn.execute("insert into shadowing.view_predictions values (1, 7, 7), (2, 3, 3), (3, 7, 7)")
            conn.execute("set search_path = shadowing, public")
            for sql in (
                "select id from view_predictions where digit = 7 limit 5",
                "select id from view_predictions where digit = 7 order by id limit 5",
                "select id from view_predictions where digit = 7",
            ):
                assert sorted(r[0] for r in conn.execute(sql).fetchall()) == [1, 3], sql
            conn.execute("reset search_path")
            assert conn.execute(f"select count(*) from {cache_table(conn, 'view_oracle')}").fetchone()[0] == 0
            rows = conn.execute(
                "select id from view_predictions where digit = 7 and id < 40 order by id"
            ).fetchall()
            assert [r[0] for r in rows] == [i for i in range(40) if expected[i] == 7]
        finally:
            conn.execute("reset search_path")
            conn.execute("drop schema shadowing cascade")
