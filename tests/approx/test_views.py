"""Approximate queries over model views: the view is merged into the query first."""

from __future__ import annotations

import pytest
from pglast import parse_sql
from pglast.stream import RawStream

from planner.approx.flatten import flatten_views
from planner.outcome import PlanError
from tests.approx.test_approx_sql import _last_log, _truth

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


def test_an_alias_clash_is_refused():
    with pytest.raises(PlanError) as caught:
        _flat("SELECT v.id FROM preds v, other d")
    assert caught.value.sqlstate == "0A000" and "alias" in (caught.value.hint or "")


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
