"""Approximate queries end to end on scikit-learn's digits, through psycopg (simple protocol)."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

RT = (
    "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 "
    "RECALL TARGET 90% CONFIDENCE 95% BUDGET {budget} USING PROXY digit_proxy_p7(pixels)"
)


def _truth(world) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(world.mlp_path), providers=["CPUExecutionProvider"])
    labels = dict(
        zip([o.name for o in session.get_outputs()], session.run(None, {"X": world.digits.x}), strict=True)
    )
    return np.flatnonzero(labels["label"] == 7)


def _last_log(conn):
    return conn.execute(
        "select mode, target, confidence, estimate, ci_low, ci_high, model_calls from sieve.query_log "
        "order by query_id desc limit 1"
    ).fetchone()


def _expect_error(conn, sql: str, sqlstate: str, words: str) -> None:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql)
    assert caught.value.sqlstate == sqlstate, caught.value
    assert words in str(caught.value)
    assert conn.execute("select 1").fetchone() == (1,)  # the session carries on


def test_bad_input_is_a_clear_error_and_the_session_stays_usable(approx_world):
    with approx_world.connect() as conn:
        base = "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 "
        _expect_error(conn, base + "RECALL TARGET 120% USING PROXY score", "22023", "RECALL TARGET")
        _expect_error(
            conn, base + "RECALL TARGET 90% CONFIDENCE 40% USING PROXY score", "22023", "CONFIDENCE"
        )
        _expect_error(conn, base + "RECALL TARGET 90% BUDGET 0 USING PROXY score", "22023", "BUDGET")
        _expect_error(
            conn,
            "SELECT id FROM digits WHERE label = 7 RECALL TARGET 90% USING PROXY score",
            "0A000",
            "model predicate",
        )
        _expect_error(conn, base + "RECALL TARGET 90% USING PROXY label", "22023", "[0, 1]")
        _expect_error(conn, base + "RECALL TARGET 90% USING PROXY 'x'::text", "22023", "not numeric")
        with conn.transaction(), pytest.raises(psycopg.Error):
            conn.execute(base + "RECALL TARGET 90% BUDGET 0 USING PROXY score")
        assert conn.execute("select 2").fetchone() == (2,)


def test_recall_target_meets_recall_within_budget_over_seeded_runs(approx_world):
    """1,797 rows, 178 sevens: at budget 1200 the bound certifies a proxy threshold."""
    truth = set(_truth(approx_world).tolist())
    budget = 1200
    recalls, sizes = [], []
    notices: list[str] = []
    with approx_world.connect() as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        for seed in range(4):
            conn.execute(f"set sieve.seed = {seed}")
            notices.clear()
            rows = {r[0] for r in conn.execute(RT.format(budget=budget)).fetchall()}
            mode, target, confidence, _, ci_low, _, calls = _last_log(conn)
            assert (mode, target, confidence) == ("recall", 0.9, 0.95)
            assert ci_low >= 0.9
            assert calls.get("digit_oracle", 0) <= budget
            assert any("recall target 90%" in n and "budget 1200" in n for n in notices), notices
            recalls.append(len(rows & truth) / len(truth))
            sizes.append(len(rows))
    # Each run meets the target with probability >= 95%; four runs: allow at most one miss (the
    # chance of two misses is below 2%), and no run may fall far below the target.
    assert sum(r >= 0.9 for r in recalls) >= 3, recalls
    assert min(recalls) >= 0.8, recalls
    assert max(sizes) < len(approx_world.digits.y) / 2, sizes  # a proxy threshold, not every row


def test_a_budget_too_small_returns_every_row_and_says_what_budget_would_do(approx_world):
    """With the finite-sample bound (sieve.bound = betting) 300 draws certify no threshold."""
    notices: list[str] = []
    with approx_world.connect() as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("set sieve.seed = 9")
        conn.execute("set sieve.bound = 'betting'")
        rows = conn.execute(RT.format(budget=300)).fetchall()
        assert _last_log(conn)[6].get("digit_oracle", 0) <= 300
    assert len(rows) > len(_truth(approx_world))
    assert any("a budget of roughly" in n for n in notices), notices


def test_same_seed_gives_the_same_rows(approx_world):
    with approx_world.connect() as conn:
        conn.execute("set sieve.seed = 11")
        first = conn.execute(RT.format(budget=1100)).fetchall()
        second = conn.execute(RT.format(budget=1100)).fetchall()
    assert sorted(first) == sorted(second)


def test_a_clause_after_limit_is_a_syntax_error_with_a_hint(approx_world):
    with approx_world.connect() as conn:
        _expect_error(
            conn,
            "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 RECALL TARGET 90% "
            "USING PROXY digit_proxy_p7(pixels) LIMIT 5",
            "42601",
            "USING PROXY",
        )


def test_precision_target_and_supg_spelling(approx_world):
    truth = set(_truth(approx_world).tolist())
    with approx_world.connect() as conn:
        conn.execute("set sieve.seed = 3")
        rows = conn.execute(
            "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 PRECISION TARGET 90% BUDGET 300 "
            "USING PROXY digit_proxy_p7(pixels);"
        ).fetchall()
        assert rows
        precision = len({r[0] for r in rows} & truth) / len(rows)
        assert precision >= 0.85
        assert _last_log(conn)[6].get("digit_oracle", 0) <= 300
        supg = conn.execute(
            "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 AND id < 900 WITH RECALL 90% "
            "WITH SUCCESS PROBABILITY 95% ORACLE LIMIT 200 USING PROXY digit_proxy_p7(pixels)"
        ).fetchall()
        assert all(r[0] < 900 for r in supg)
        assert _last_log(conn)[6].get("digit_oracle", 0) <= 200


def test_count_error_target_interval_covers_the_exact_count(approx_world):
    truth = _truth(approx_world)
    with approx_world.connect() as conn:
        conn.execute("set sieve.seed = 5")
        conn.execute("set sieve.bounds = on")
        rows = conn.execute(
            "SELECT COUNT(*) FROM digits WHERE digit_oracle(pixels) = 7 ERROR TARGET 10% CONFIDENCE 95% "
            "BUDGET 600 USING PROXY digit_proxy_p7(pixels)"
        ).fetchall()
        conn.execute("reset sieve.bounds")
        mode, target, _, estimate, ci_low, ci_high, calls = _last_log(conn)
    (count, low, high) = rows[0]
    assert isinstance(count, int) and isinstance(low, float)  # COUNT(*) is bigint, as exactly
    assert mode == "approx_count" and target == pytest.approx(0.1)
    assert low <= truth.size <= high, (low, truth.size, high)
    assert (round(estimate), ci_low, ci_high) == (count, pytest.approx(low), pytest.approx(high))
    assert calls.get("digit_oracle", 0) <= 600


def test_grouped_avg_returns_one_row_per_group(approx_world):
    with approx_world.connect() as conn:
        conn.execute("set sieve.seed = 1")
        rows = conn.execute(
            "SELECT label, AVG(score) FROM digits WHERE digit_oracle(pixels) = label AND label < 3 "
            "GROUP BY label ERROR TARGET 20% BUDGET 200"
        ).fetchall()
        exact = dict(
            conn.execute("select label, avg(score) from digits where label < 3 group by label").fetchall()
        )
    assert [r[0] for r in rows] == [0, 1, 2]  # typed as the exact query would be
    for label, avg in rows:
        assert float(avg) == pytest.approx(exact[label], rel=0.3)
