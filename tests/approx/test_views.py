"""Approximate queries over model views: the view is merged into the query first."""

from __future__ import annotations

import pytest
from pglast import parse_sql
from pglast.stream import RawStream

from planner.approx.flatten import flatten_views
from planner.outcome import PlanError
from tests.approx.test_approx_sql import _expect_error, _last_log, _truth
from tests.support.video import build_world, install

VIEWS = {
    "preds": "SELECT d.id, digit_oracle(d.pixels) AS digit, p7(d.pixels) AS p FROM digits d",
    "sevens": "SELECT d.id FROM digits d WHERE digit_oracle(d.pixels) = 7",
    "bare": "SELECT id, digit_oracle(pixels) AS digit FROM digits WHERE id > 3",  # as pg_get_viewdef
}


def _flat(sql: str) -> str:
    stmt = parse_sql(sql)[0].stmt
    flatten_views(stmt, VIEWS)
    return RawStream()(stmt)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT id FROM preds WHERE digit = 7",
            "SELECT d.id AS id FROM digits AS d WHERE digit_oracle(d.pixels) = 7",
        ),
        (
            "SELECT v.digit, count(*) FROM preds v WHERE v.digit = 7 AND v.id < 9 GROUP BY v.digit",
            "SELECT digit_oracle(d.pixels) AS digit, count(*) FROM digits AS d "
            "WHERE digit_oracle(d.pixels) = 7 AND d.id < 9 GROUP BY digit_oracle(d.pixels)",
        ),
        (
            "SELECT * FROM preds",
            "SELECT d.id AS id, digit_oracle(d.pixels) AS digit, p7(d.pixels) AS p FROM digits AS d",
        ),
        (
            "SELECT s.id FROM sevens s JOIN t ON t.id = s.id WHERE t.x > 1",
            "SELECT d.id AS id FROM digits AS d INNER JOIN t ON t.id = d.id "
            "WHERE digit_oracle(d.pixels) = 7 AND t.x > 1",
        ),
        ("SELECT id FROM digits WHERE f(x)", "SELECT id FROM digits WHERE f(x)"),
        (
            "SELECT b.id FROM bare b JOIN t ON t.id = b.id WHERE b.digit = 1",
            "SELECT digits.id AS id FROM digits INNER JOIN t ON t.id = digits.id "
            "WHERE digits.id > 3 AND digit_oracle(digits.pixels) = 1",
        ),
    ],
)
def test_views_merge_into_the_query(sql, expected):
    assert _flat(sql) == expected


def test_an_alias_clash_gets_a_fresh_alias():
    assert _flat("SELECT v.id FROM preds v, other d") == "SELECT d_1.id AS id FROM digits AS d_1, other AS d"


def test_an_unqualified_name_that_may_be_either_is_refused():
    with pytest.raises(PlanError) as caught:
        _flat("SELECT id FROM preds WHERE id IN (SELECT id FROM picks)")
    assert caught.value.sqlstate == "0A000" and "qualify" in (caught.value.hint or "")


@pytest.fixture(scope="module")
def view_world(approx_world):
    with approx_world.connect() as conn:
        conn.execute(
            "create or replace view digit_predictions as select d.id, d.label, "
            "digit_oracle(d.pixels) as digit, digit_proxy_p7(d.pixels) as p7 from digits d"
        )
    return approx_world


def test_recall_target_over_a_model_view(view_world):
    truth = set(_truth(view_world).tolist())
    with view_world.connect() as conn:
        conn.execute("set sieve.seed = 0")
        rows = {
            r[0]
            for r in conn.execute(
                "SELECT id FROM digit_predictions WHERE digit = 7 "
                "RECALL TARGET 90% BUDGET 1200 USING PROXY p7"
            ).fetchall()
        }
        mode, target, _, _, ci_low, _, calls = _last_log(conn)
    assert (mode, target) == ("recall", 0.9) and ci_low >= 0.9
    assert calls.get("digit_oracle", 0) <= 1200
    assert len(rows & truth) / len(truth) >= 0.8
    assert len(rows) < len(view_world.digits.y) / 2


def test_limit_count_and_join_over_a_model_view(view_world):
    truth = set(_truth(view_world).tolist())
    with view_world.connect() as conn:
        conn.execute("set sieve.seed = 3")
        cur = conn.execute(
            "SELECT * FROM digit_predictions WHERE digit = 7 AND id < 900 LIMIT 4 USING PROXY p7"
        )
        assert [c.name for c in cur.description] == ["id", "label", "digit", "p7"]
        rows = cur.fetchall()
        assert len(rows) == 4 and all(r[0] in truth and r[0] < 900 and r[2] == 7 for r in rows)
        joined = conn.execute(
            "SELECT p.id, e.label FROM digit_predictions p JOIN digits e ON e.id = p.id "
            "WHERE p.digit = 7 LIMIT 3 USING PROXY p.p7"
        ).fetchall()
        assert len(joined) == 3 and all(r[0] in truth for r in joined)
        conn.execute("set sieve.bounds = on")
        count, low, high = (
            float(v)
            for v in conn.execute(
                "SELECT COUNT(*) FROM digit_predictions v WHERE v.digit = 7 "
                "ERROR TARGET 10% BUDGET 600 USING PROXY v.p7"
            ).fetchone()
        )
        conn.execute("reset sieve.bounds")
    assert low <= len(truth) <= high


def test_a_subquery_in_where_keeps_its_own_names(view_world):
    """Issue 11: the inner ``id`` is digits.id of the subquery, not the view's (it was rebound,
    and the query answered 0 rows)."""
    truth = set(_truth(view_world).tolist())
    wanted = {i for i in truth if 15 <= i < 1015}
    with view_world.connect() as conn:
        conn.execute("set sieve.seed = 0")
        rows = {
            r[0]
            for r in conn.execute(
                "SELECT id FROM digit_predictions WHERE digit = 7 AND id IN "
                "(SELECT id + 15 FROM digits WHERE id < 1000) RECALL TARGET 90% BUDGET 1200 USING PROXY p7"
            ).fetchall()
        }
    assert rows and all(15 <= i < 1015 for i in rows)
    assert len(rows & wanted) >= len(wanted) / 2


def test_a_scalar_subquery_in_where_survives(view_world):
    truth = set(_truth(view_world).tolist())
    with view_world.connect() as conn:
        mean = float(conn.execute("select avg(id) from digits").fetchone()[0])
        conn.execute("set sieve.seed = 0")
        conn.execute("set sieve.bounds = on")
        count, low, high = (
            float(v)
            for v in conn.execute(
                "SELECT COUNT(*) FROM digit_predictions WHERE digit = 7 "
                "AND id > (SELECT avg(id) FROM digits) "
                "ERROR TARGET 10% BUDGET 1797 USING PROXY p7"
            ).fetchone()
        )
    expected = sum(1 for i in truth if i > mean)
    assert low <= expected <= high and count > 0


def test_an_ambiguous_name_in_a_subquery_is_refused_with_a_hint(view_world):
    with view_world.connect() as conn:
        conn.execute("create table if not exists picks (id int)")
        _expect_error(
            conn,
            "SELECT COUNT(*) FROM digit_predictions WHERE digit = 7 AND id IN (SELECT id FROM picks) "
            "ERROR TARGET 10%",
            "0A000",
            '"id"',
        )


@pytest.fixture(scope="module")
def video_views(approx_world):
    """The video-analytics views (objects over a table-returning detector, colors over objects)
    in the same server."""
    world = build_world(approx_world.models_dir, n_frames=400, seed=2060)
    with approx_world.connect() as conn:
        install(conn, world)
    return approx_world, world


def _bounded(conn, sql: str) -> list[float]:
    conn.execute("set sieve.seed = 1")
    conn.execute("set sieve.bounds = on")
    try:
        return [float(v) for v in conn.execute(sql).fetchone()]
    finally:
        conn.execute("reset sieve.bounds")


def test_count_over_a_view_of_a_table_returning_model(video_views):
    server, world = video_views
    truth = sum(1 for o in world.objects if o.label == "car")
    with server.connect() as conn:
        count, low, high = _bounded(
            conn, "SELECT COUNT(*) FROM objects WHERE label = 'car' ERROR TARGET 10% BUDGET 400"
        )
    assert low <= truth <= high


def test_count_over_a_chain_of_two_model_views(video_views):
    server, world = video_views
    truth = sum(1 for o in world.objects if o.color == "red")
    with server.connect() as conn:
        count, low, high = _bounded(
            conn, "SELECT COUNT(*) FROM colors c WHERE c.color = 'red' ERROR TARGET 10% BUDGET 2000"
        )
    assert low <= truth <= high
