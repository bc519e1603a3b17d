"""EXPLAIN and EXPLAIN ANALYZE show the ML operators above Postgres's own plan."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.models.conftest import label_function, label_view
from tests.support.model_files import cache_table


@pytest.fixture(scope="module")
def explain_world(world):
    with world.connect() as conn:
        label_function(conn, "explain_oracle")
        label_view(conn, "explain_predictions", "explain_oracle")
    return world


def _psql(world, pg_bin, sql: str) -> str:
    done = subprocess.run(
        [str(pg_bin / "psql"), "-X", "-At", world.server.dsn(), "-c", sql], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_explain_shows_model_inputs_to_run_without_running_them(explain_world, pg_bin):
    out = _psql(
        explain_world, pg_bin, "explain select id from explain_predictions where id < 120 and digit = 3"
    )
    assert out.splitlines()[0].startswith("SieveDB ML Materialize")
    assert re.search(r"Model Call explain_oracle v1 on \w+ +\(inputs to run: 120, cached inputs: 0", out)
    assert "Seq Scan on digits" in out or "Index Scan" in out
    with explain_world.connect() as conn:
        cached = conn.execute(f"select count(*) from {cache_table(conn, 'explain_oracle')}").fetchone()[0]
    assert cached == 0, "plain EXPLAIN must not run the model"


def test_explain_analyze_counts_equal_the_query_log(explain_world, pg_bin):
    sql = "explain analyze select id from explain_predictions where id between 200 and 289 and digit = 3"
    out = _psql(explain_world, pg_bin, sql)
    actual = re.search(r"Actual: model calls=(\d+) cache hits=(\d+)", out)
    assert actual is not None, out
    assert "Execution Time" in out
    with explain_world.connect() as conn:
        calls, hits = conn.execute(
            "select model_calls->>'explain_oracle', cache_hits from sieve.query_log where query = %s "
            "order by query_id desc limit 1",
            (sql,),
        ).fetchone()
    assert (int(actual.group(1)), int(actual.group(2))) == (int(calls), hits) == (90, 0)
    again = _psql(explain_world, pg_bin, sql)
    assert "Actual: model calls=0 cache hits=90" in again


def test_explain_format_json(explain_world, pg_bin):
    out = _psql(
        explain_world, pg_bin, "explain (format json) select id, digit from explain_predictions where id < 10"
    )
    document = json.loads(out)
    plan = document[0]["Plan"]
    assert plan["Node Type"] == "SieveDB ML Materialize"
    model, postgres = plan["Plans"]
    assert model["Model"] == "explain_oracle" and model["Inputs To Run"] + model["Cached Inputs"] == 10
    assert "Node Type" in postgres


def test_explain_of_an_unread_model_column_runs_no_model(explain_world, pg_bin):
    """The view's model column is not read: no call site, Postgres's own plan."""
    out = _psql(explain_world, pg_bin, "explain select id from explain_predictions where id < 10")
    assert "SieveDB" not in out and "Model Call" not in out


def _clear(world) -> None:
    with world.connect() as conn:
        conn.execute("select sieve.clear_cache('explain_oracle')")


def test_explain_analyze_of_a_limit_stops_early_and_counts_inference_in_its_total(explain_world, pg_bin):
    _clear(explain_world)
    sql = "explain analyze select id from explain_predictions where digit = 7 limit 5"
    out = _psql(explain_world, pg_bin, sql)
    calls = int(re.search(r"Actual: model calls=(\d+)", out).group(1))
    rows = len(explain_world.digits.y)
    assert 0 < calls < rows // 4, out
    assert "LIMIT Early Stop: stopped early" in out
    total = float(re.search(r"SieveDB Total Time: ([\d.]+) ms", out).group(1))
    execution = float(re.search(r"Execution Time: ([\d.]+) ms", out).group(1))
    assert total > execution  # inference and materialization are in the total, not in Postgres's
    with explain_world.connect() as conn:
        logged = conn.execute(
            "select (model_calls->>'explain_oracle')::int from sieve.query_log "
            "where query = %s order by query_id desc limit 1",
            (sql,),
        ).fetchone()[0]
    assert logged == calls


@pytest.mark.parametrize("prepare", [None, True], ids=["simple", "extended"])
def test_explain_works_over_both_protocols_without_running_the_model(explain_world, prepare):
    _clear(explain_world)
    with explain_world.connect() as conn:
        lines = [
            r[0]
            for r in conn.execute(
                "explain select id from explain_predictions where digit = 3 and id < 40", prepare=prepare
            ).fetchall()
        ]
        cached = conn.execute(f"select count(*) from {cache_table(conn, 'explain_oracle')}").fetchone()[0]
    assert lines[0].startswith("SieveDB ML Materialize"), lines
    assert any("inputs to run: 40" in line for line in lines), lines
    assert cached == 0
