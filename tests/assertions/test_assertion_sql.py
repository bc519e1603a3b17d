"""Model assertions through SQL: CREATE / DROP ASSERTION, sieve.check_assertion, sieve.violations,
monitoring after a query materializes outputs, learned observation assertions, privileges and
sieve.label_candidates, on a live server with the digits MLP."""

from __future__ import annotations

import time

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.inference.models import digits_mlp, load_digits_data
from tests.support.servers import SieveProcess

DISAGREE = "SELECT id, 1.0 AS severity FROM digits WHERE digit_oracle(pixels) <> label"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    models_dir = tmp_path_factory.mktemp("assert-models")
    digits = load_digits_data()
    digits_mlp(digits, models_dir)
    proc = SieveProcess(
        data_dir=tmp_path_factory.mktemp("assert-server") / "data",
        extra_args=["--models-dir", str(models_dir), "--inference-workers", "1"],
    ).start()
    with psycopg.connect(proc.dsn(), autocommit=True) as conn:
        conn.execute("create table digits (id int primary key, pixels real[], label int)")
        with conn.cursor().copy("copy digits (id, pixels, label) from stdin") as copy:
            for i, (row, label) in enumerate(zip(digits.x, digits.y, strict=True)):
                copy.write_row((i, row.tolist(), int(label)))
        conn.execute(
            "create function digit_oracle(pixels real[]) returns int language onnx "
            "as 'digits_mlp.onnx', '{\"output\": \"label\"}'"
        )
        for role in ("alice", "bob"):
            conn.execute(f"create role {role} login")
        conn.execute("grant execute on function digit_oracle(real[]) to bob")
        conn.execute("grant select on digits to bob")
    yield proc
    proc.stop()


def connect(server, user: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(server.dsn(user=user), autocommit=True)


def sqlstate_of(conn, sql: str) -> str:
    with pytest.raises(psycopg.Error) as info:
        conn.execute(sql)
    return info.value.sqlstate


def test_a_consistency_assertion_flags_exactly_the_rows_its_query_returns(server):
    with connect(server) as conn:
        conn.execute(f"CREATE ASSERTION disagree AS {DISAGREE}")
        name, kind, models, owner = conn.execute(
            "select name, kind, models, owner from sieve.assertions where name = 'disagree'"
        ).fetchone()
        assert (name, kind, models, owner) == ("disagree", "consistency", ["digit_oracle"], "postgres")
        (count,) = conn.execute("SELECT sieve.check_assertion('disagree')").fetchone()
        truth = {r[0] for r in conn.execute("SELECT id FROM digits WHERE digit_oracle(pixels) <> label")}
        flagged = conn.execute(
            "select key, severity, model_versions from sieve.violations where assertion = 'disagree'"
        ).fetchall()
        assert count == len(truth) == len(flagged) > 0
        assert {k["id"] for k, _, _ in flagged} == truth
        assert all(s == 1.0 and v == {"digit_oracle": 1} for _, s, v in flagged)
        last_count = conn.execute(
            "select last_count from sieve.assertions where name = 'disagree'"
        ).fetchone()
        assert last_count == (count,)
        conn.execute("DROP ASSERTION disagree")
        assert conn.execute("select count(*) from sieve.violations").fetchone() == (0,)


def test_severity_zero_or_null_abstains_and_no_severity_column_flags(server):
    with connect(server) as conn:
        conn.execute(
            "CREATE ASSERTION graded AS SELECT id, CASE WHEN id < 3 THEN id ELSE NULL END AS severity "
            "FROM digits WHERE id < 10"
        )
        conn.execute("CREATE ASSERTION plain AS SELECT id FROM digits WHERE id < 4")
        assert conn.execute("SELECT sieve.check_assertion('graded')").fetchone() == (2,)  # ids 1, 2
        assert conn.execute("SELECT sieve.check_assertion('plain')").fetchone() == (4,)
        graded = conn.execute(
            "select key->>'id', severity from sieve.violations where assertion = 'graded' order by 1"
        ).fetchall()
        assert graded == [("1", 1.0), ("2", 2.0)]
        conn.execute("DROP ASSERTION graded")
        conn.execute("DROP ASSERTION plain")


@pytest.mark.parametrize(
    "sql, sqlstate",
    [
        ("CREATE ASSERTION a1 AS SELECT id FROM no_such_table", "42P01"),
        ("CREATE ASSERTION a2 AS SELECT 1.0 AS severity FROM digits", "22023"),  # no key column
        ("CREATE ASSERTION a3 ON digits LEARNED FROM (pixels AS p) KEY (id)", "42804"),  # not a number
        ("CREATE ASSERTION a4 ON digits LEARNED FROM (label AS l)", "42601"),  # no KEY
        ("CREATE ASSERTION a5 ON digits LEARNED FROM (label) KEY (id)", "42601"),  # unnamed feature
        ("CREATE ASSERTION a6", "42601"),
        ("SELECT sieve.check_assertion('nope')", "42704"),
        ("DROP ASSERTION nope", "42704"),
        ("SELECT * FROM sieve.label_candidates(5, 'greedy')", "22023"),
    ],
)
def test_bad_assertion_statements_get_their_sqlstate(server, sql, sqlstate):
    with connect(server) as conn:
        assert sqlstate_of(conn, sql) == sqlstate
        assert conn.execute("select 1").fetchone() == (1,)  # the session survives
        assert conn.execute("select count(*) from sieve.assertions where name like 'a_'").fetchone() == (0,)


def test_a_duplicate_name_is_refused_and_drop_if_exists_skips(server):
    with connect(server) as conn:
        conn.execute("CREATE ASSERTION twice AS SELECT id FROM digits WHERE id < 2")
        assert sqlstate_of(conn, "CREATE ASSERTION twice AS SELECT id FROM digits") == "42710"
        conn.execute("DROP ASSERTION twice")
        conn.execute("DROP ASSERTION IF EXISTS twice")


def test_privileges_follow_the_roles(server):
    with connect(server, "bob") as bob, connect(server, "alice") as alice:
        bob.execute("CREATE ASSERTION bobs AS SELECT id FROM digits WHERE id < 5")
        assert bob.execute("SELECT sieve.check_assertion('bobs')").fetchone() == (5,)
        # alice may not read digits: she cannot create an assertion over it, nor check bob's
        assert sqlstate_of(alice, "CREATE ASSERTION alices AS SELECT id FROM digits") == "42501"
        assert sqlstate_of(alice, "SELECT sieve.check_assertion('bobs')") == "42501"
        assert sqlstate_of(alice, "DROP ASSERTION bobs") == "42501"  # only its owner drops it
        assert alice.execute("select count(*) from sieve.violations").fetchone() == (0,)  # not hers
        assert bob.execute("select count(*) from sieve.violations where assertion = 'bobs'").fetchone() == (
            5,
        )
        bob.execute("DROP ASSERTION bobs")


def _wait_for(conn, sql: str, expected, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = conn.execute(sql).fetchone()
        if value == expected:
            return value
        time.sleep(0.2)
    return conn.execute(sql).fetchone()


def test_monitoring_updates_violations_after_a_query_without_running_models(server):
    with connect(server) as conn:
        conn.execute("select sieve.clear_cache('digit_oracle')")
        conn.execute(f"CREATE ASSERTION watched AS {DISAGREE}")
        before = conn.execute("select coalesce(max(query_id), 0) from sieve.query_log").fetchone()[0]
        # materializes digit_oracle for ids < 300 only; monitoring re-reads what is cached
        conn.execute("SELECT count(*) FROM digits WHERE digit_oracle(pixels) = 3 AND id < 300").fetchone()
        truth = conn.execute(
            "SELECT count(*) FROM digits WHERE id < 300 AND digit_oracle(pixels) <> label"
        ).fetchone()
        assert truth[0] > 0
        seen = _wait_for(conn, "select count(*) from sieve.violations where assertion = 'watched'", truth)
        assert seen == truth
        keys = [
            r[0]
            for r in conn.execute(
                "select (key->>'id')::int from sieve.violations where assertion = 'watched'"
            )
        ]
        assert max(keys) < 300  # nothing outside what was materialized
        calls = conn.execute(
            "select coalesce(sum((model_calls->>'digit_oracle')::int), 0) from sieve.query_log "
            "where query_id > %s",
            [before],
        ).fetchone()[0]
        assert calls == 300  # the query's own inputs; monitoring ran no model
        monitored = conn.execute(
            "select monitored from sieve.assertion_checks where assertion = 'watched' "
            "order by checked_at desc limit 1"
        ).fetchone()
        assert monitored == (True,)
        conn.execute("DROP ASSERTION watched")


def test_a_learned_assertion_flags_injected_odd_boxes(server):
    rng = np.random.default_rng(7)
    n, odd = 2000, 20
    labels = rng.choice(["car", "person"], n)
    width = np.where(labels == "car", rng.normal(40, 4, n), rng.normal(12, 2, n))
    height = np.where(labels == "car", rng.normal(20, 2, n), rng.normal(30, 3, n))
    injected = rng.choice(n, odd, replace=False)
    width[injected] *= 3.0  # wrong sizes
    with connect(server) as conn:
        conn.execute("create table boxes (box_id int primary key, label text, w real, h real)")
        with conn.cursor().copy("copy boxes from stdin") as copy:
            for i in range(n):
                copy.write_row((i, labels[i], float(width[i]), float(height[i])))
        conn.execute(
            "CREATE ASSERTION odd_boxes ON boxes LEARNED FROM (w * h AS area, w / h AS aspect) "
            "PER label KEY (box_id)"
        )
        (count,) = conn.execute("SELECT sieve.check_assertion('odd_boxes')").fetchone()
        top = [
            r[0]
            for r in conn.execute(
                "select (key->>'box_id')::int from sieve.violations where assertion = 'odd_boxes' "
                "order by severity desc limit %s",
                [odd],
            )
        ]
        conn.execute("DROP ASSERTION odd_boxes")
    recall_at_k = len(set(top) & set(injected.tolist())) / odd
    assert 0 < count < n * 0.05
    assert recall_at_k >= 0.7, recall_at_k


def test_label_candidates_propose_flagged_rows_not_yet_labelled(server):
    with connect(server) as conn:
        conn.execute(f"CREATE ASSERTION wrong AS {DISAGREE}")
        conn.execute("CREATE ASSERTION small_ids AS SELECT id, 0.5 AS severity FROM digits WHERE id < 30")
        conn.execute("SELECT sieve.check_assertion('wrong')")
        conn.execute("SELECT sieve.check_assertion('small_ids')")
        flagged = {
            r[0]
            for r in conn.execute(
                "select key::text from sieve.violations where assertion in ('wrong', 'small_ids')"
            )
        }
        first = conn.execute("SELECT * FROM sieve.label_candidates(10, 'bal')").fetchall()
        assert 0 < len(first) <= 10 and len({r[1]["id"] for r in first}) == len(first)
        assert all(r[0] in ("wrong", "small_ids") for r in first), first
        for _, key, _ in first:
            conn.execute("insert into sieve.labels (key, label) values (%s, '7')", [Jsonb(key)])
        again = conn.execute("SELECT * FROM sieve.label_candidates(1000, 'random')").fetchall()
        assert {r[1]["id"] for r in again}.isdisjoint({r[1]["id"] for r in first})
        assert len(again) == len(flagged) - len(first)
        assert sqlstate_of(conn, "SELECT * FROM sieve.label_candidates(5, 'uncertainty')") == "22023"
        conn.execute("delete from sieve.labels")
        conn.execute("DROP ASSERTION wrong")
        conn.execute("DROP ASSERTION small_ids")


def test_uncertainty_ranks_rows_by_the_confidence_query(server):
    with connect(server) as conn:
        conn.execute(
            "SET sieve.uncertainty_query = 'SELECT id, 0.5 + (id % 10) / 20.0 AS confidence FROM digits'"
        )
        rows = conn.execute("SELECT * FROM sieve.label_candidates(5, 'uncertainty')").fetchall()
        assert len(rows) == 5
        assert all(r[0] is None and r[1]["id"] % 10 == 0 and r[2] == pytest.approx(0.5) for r in rows), rows
        conn.execute("RESET sieve.uncertainty_query")


def test_a_new_model_version_is_checked_again(server):
    """After the other tests that read digit_oracle: it replaces it (a new version, an empty cache)."""
    with connect(server) as conn:
        conn.execute(f"CREATE ASSERTION versioned AS {DISAGREE}")
        conn.execute("SELECT sieve.check_assertion('versioned')")
        (old,) = conn.execute("select version from sieve.models where name = 'digit_oracle'").fetchone()
        conn.execute(
            "create or replace function digit_oracle(pixels real[]) returns int language onnx "
            'as \'digits_mlp.onnx\', \'{"output": {"output": "label"}}\''
        )
        (new,) = conn.execute("select version from sieve.models where name = 'digit_oracle'").fetchone()
        assert new > old
        # the new version's cache is empty: monitoring re-reads it and no stale flag remains
        assert _wait_for(
            conn, "select count(*) from sieve.violations where assertion = 'versioned'", (0,)
        ) == (0,)
        (count,) = conn.execute("SELECT sieve.check_assertion('versioned')").fetchone()
        versions = {
            r[0]["digit_oracle"]
            for r in conn.execute("select model_versions from sieve.violations where assertion = 'versioned'")
        }
        assert count > 0 and versions == {new}
        conn.execute("DROP ASSERTION versioned")


def test_a_label_is_changed_only_by_whoever_gave_it(server):
    with connect(server, "bob") as bob, connect(server, "alice") as alice:
        bob.execute("insert into sieve.labels (key, label) values ('{\"id\": 99}', '3')")
        assert alice.execute("select label from sieve.labels where key = '{\"id\": 99}'").fetchone() == (3,)
        alice.execute("delete from sieve.labels where key = '{\"id\": 99}'")  # not hers: no row
        alice.execute("update sieve.labels set label = '4' where key = '{\"id\": 99}'")
        assert bob.execute("select label from sieve.labels where key = '{\"id\": 99}'").fetchone() == (3,)
        bob.execute("delete from sieve.labels where key = '{\"id\": 99}'")


def test_checks_and_candidates_run_as_prepared_statements(server):
    """psycopg prepares a statement it runs often (and with prepare=True): the executions still go
    through SieveDB, with bound parameters."""
    with psycopg.connect(server.dsn(), autocommit=True, prepare_threshold=0) as conn:
        # DDL Postgres cannot parse is held whole: not as a named prepared statement
        conn.execute("CREATE ASSERTION prepared_ids AS SELECT id FROM digits WHERE id < 7", prepare=False)
        for _ in range(3):
            assert conn.execute("SELECT sieve.check_assertion(%s)", ["prepared_ids"]).fetchone() == (7,)
            rows = conn.execute("SELECT * FROM sieve.label_candidates(%s, %s)", [3, "random"]).fetchall()
            assert len(rows) == 3
        conn.execute("DROP ASSERTION prepared_ids", prepare=False)
