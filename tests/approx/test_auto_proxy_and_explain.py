"""Approximate queries without USING PROXY (an automatic proxy), and EXPLAIN of approximate queries."""

from __future__ import annotations

import json

import pytest

from tests.approx.test_approx_sql import _last_log, _truth

# digits_pixels holds only id and pixels: the proxy must learn from the pixel array
AUTO_RT = (
    "SELECT id FROM digits_pixels WHERE digit_oracle(pixels) = 7 RECALL TARGET 90% CONFIDENCE 95% BUDGET 600"
)


@pytest.fixture(scope="module", autouse=True)
def digits_pixels(approx_world):
    with approx_world.connect() as conn:
        conn.execute("create table if not exists digits_pixels as select id, pixels from digits")


def test_a_selection_without_a_proxy_trains_one_within_the_budget(approx_world):
    truth = set(_truth(approx_world).tolist())
    notices: list[str] = []
    recalls, sizes = [], []
    with approx_world.connect() as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        for seed in range(3):
            conn.execute(f"set sieve.seed = {seed}")
            notices.clear()
            rows = {r[0] for r in conn.execute(AUTO_RT).fetchall()}
            calls = _last_log(conn)[6]
            assert calls.get("digit_oracle", 0) <= 600, calls  # training labels count too
            recalls.append(len(rows & truth) / len(truth))
            sizes.append(len(rows))
            note = next(n for n in notices if "recall target 90%" in n)
            assert "automatic proxy: logistic regression on 65 features of id, pixels" in note, note
            assert "trained on 120" in note, note
    # each run meets 90% with probability >= 95%: three runs, allow one miss, none far below
    assert sum(r >= 0.9 for r in recalls) >= 2 and min(recalls) >= 0.8, recalls
    # the pixels predict a 7 well: about the 178 sevens come back, not the table's 1,797 rows
    assert max(sizes) < 2 * len(truth), sizes


def test_explain_shows_the_operator_budget_split_and_bound_without_running(approx_world):
    with approx_world.connect() as conn:
        before = conn.execute("select count(*) from sieve.query_log").fetchone()[0]
        plan = [r[0] for r in conn.execute("EXPLAIN " + AUTO_RT).fetchall()]
        after = conn.execute("select count(*) from sieve.query_log").fetchone()[0]
    text = "\n".join(plan)
    assert plan[0].startswith("SieveDB Approximate Selection  (SUPG importance-sampling recall target")
    assert "Budget: 600" in text and "operator: 480" in text
    assert "proxy training (uniform sample): 120" in text
    assert "Bound: empirical Bernstein" in text
    assert "digit_oracle(pixels) = 7" in text
    assert after == before  # nothing ran


def test_explain_analyze_runs_the_sampling_and_reports_thresholds(approx_world):
    with approx_world.connect() as conn:
        conn.execute("set sieve.seed = 3")
        (doc,) = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM digits WHERE digit_oracle(pixels) = 7 "
            "RECALL TARGET 90% BUDGET 1000 USING PROXY digit_proxy_p7(pixels)"
        ).fetchone()
        mode, target, *_ = _last_log(conn)
        plan = json.loads(doc)[0]["Plan"]
        assert (mode, target) == ("recall", 0.9)
        assert plan["Proxy"] == "digit_proxy_p7(pixels)"
        assert 0 < plan["Oracle Rows Labelled"] <= 1000
        assert 0.0 <= plan["Thresholds"]["tau"] <= 1.0
        # the default bound claims the target; "Certified" holds the finite-sample level (any data)
        assert plan["Bound Claims"]["recall_lower_bound"] >= 0.9
        assert 0.0 <= plan["Certified"]["recall"] <= 1.0
        assert plan["Candidate Rows"] == 1797
        agg = [
            r[0]
            for r in conn.execute(
                "EXPLAIN ANALYZE SELECT count(*) FROM digits WHERE digit_oracle(pixels) = 7 "
                "ERROR TARGET 10% BUDGET 600 USING PROXY digit_proxy_p7(pixels)"
            ).fetchall()
        ]
    assert agg[0].startswith("SieveDB Approximate Aggregate")
    assert any(line.strip().startswith("Aggregate count:") for line in agg)
    assert any("Interval:" in line for line in agg)


def test_cached_oracle_outputs_are_free_labels_in_an_unseeded_run(approx_world):
    """Rows whose oracle output is cached form an exactly known stratum: their positives come
    back verified and the budget goes to the other rows. A seeded run ignores them (it must
    reproduce whatever the cache holds)."""
    truth = set(_truth(approx_world).tolist())
    sql = (
        "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 AND id >= 1000 "
        "RECALL TARGET 90% BUDGET 300 USING PROXY digit_proxy_p7(pixels)"
    )
    notices: list[str] = []
    with approx_world.connect() as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("reset sieve.seed")
        conn.execute("SELECT sieve.clear_cache('digit_oracle')")
        # an exact query caches the oracle's output for ids 1000..1499
        conn.execute(
            "SELECT count(*) FROM digits WHERE id BETWEEN 1000 AND 1499 AND digit_oracle(pixels) = 7"
        )
        notices.clear()
        rows = {r[0] for r in conn.execute(sql).fetchall()}
        note = next(n for n in notices if "recall target 90%" in n)
        calls = _last_log(conn)[6].get("digit_oracle", 0)
        cached_positives = {i for i in truth if 1000 <= i < 1500}
        assert cached_positives <= rows  # verified from the cache
        assert "used as free labels" in note and "500 candidate rows had cached" in note, note
        assert calls <= 300
        wanted = {i for i in truth if i >= 1000}
        assert len(rows & wanted) / len(wanted) >= 0.8
        conn.execute("set sieve.seed = 4")
        notices.clear()
        conn.execute(sql).fetchall()
        assert not any("free labels" in n for n in notices), notices
