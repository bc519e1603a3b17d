"""``LIMIT k USING PROXY expr``: exact rows found by a proxy-ordered oracle search."""

from __future__ import annotations

import psycopg
import pytest

from tests.approx.test_approx_sql import _expect_error, _last_log, _truth

LIMIT = "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 {extra}LIMIT {k} USING PROXY {proxy}"


def test_proxy_ordered_limit_returns_k_verified_rows_with_few_model_calls(approx_world):
    truth = set(_truth(approx_world).tolist())
    notices: list[str] = []
    with approx_world.connect() as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("set sieve.seed = 4")
        conn.execute("select sieve.clear_cache('digit_oracle')")
        rows = conn.execute(LIMIT.format(extra="", k=10, proxy="digit_proxy_p7(pixels)")).fetchall()
        mode, target, confidence, estimate, _, _, calls = _last_log(conn)
    ids = [r[0] for r in rows]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert set(ids) <= truth  # every row truly satisfies the predicate
    assert (mode, target, confidence, estimate) == ("limit", None, None, 10.0)
    # the proxy puts sevens first: a batch or two of labels, not the 1,797-row table
    assert 10 <= calls["digit_oracle"] <= 64, calls
    assert any("proxy-ordered LIMIT 10" in n and "10 verified rows" in n for n in notices), notices


def test_offset_plain_conjuncts_and_a_column_proxy(approx_world):
    truth = set(_truth(approx_world).tolist())
    with approx_world.connect() as conn:
        conn.execute("set sieve.seed = 2")
        rows = conn.execute(
            LIMIT.format(extra="AND id >= 1000 ", k="5 OFFSET 2", proxy="score / 16")
        ).fetchall()
        calls = _last_log(conn)[6]
    assert len(rows) == 5
    assert all(r[0] >= 1000 and r[0] in truth for r in rows)
    assert calls.get("digit_oracle", 0) < 797


def test_a_budget_that_runs_out_returns_fewer_rows_and_strict_makes_it_an_error(approx_world):
    truth = set(_truth(approx_world).tolist())
    notices: list[str] = []
    sql = "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 LIMIT 50 BUDGET 20 USING PROXY 1 - score / 16"
    with approx_world.connect() as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("set sieve.seed = 1")
        rows = conn.execute(sql).fetchall()
        assert _last_log(conn)[6].get("digit_oracle", 0) <= 20
        assert len(rows) < 50 and {r[0] for r in rows} <= truth
        assert any("only" in n and "budget of 20" in n for n in notices), notices
        conn.execute("set sieve.strict = on")
        _expect_error(conn, sql, "22023", "BUDGET 20 ran out")
        conn.execute("reset sieve.strict")


def test_limit_with_order_by_or_a_non_constant_count_is_refused(approx_world):
    with approx_world.connect() as conn:
        _expect_error(
            conn,
            "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 ORDER BY id LIMIT 3 USING PROXY score",
            "0A000",
            "ORDER BY",
        )
        _expect_error(
            conn,
            "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 LIMIT ALL USING PROXY score",
            "0A000",
            "LIMIT",
        )


def test_limit_zero_calls_no_model(approx_world):
    with approx_world.connect() as conn:
        rows = conn.execute(LIMIT.format(extra="", k=0, proxy="score")).fetchall()
        assert rows == []
        assert _last_log(conn)[6].get("digit_oracle", 0) == 0


@pytest.mark.parametrize("k", [3])
def test_limit_without_proxy_searches_in_random_order(approx_world, k):
    truth = set(_truth(approx_world).tolist())
    with approx_world.connect() as conn:
        conn.execute("set sieve.seed = 8")
        try:
            rows = conn.execute(
                f"SELECT id FROM digits WHERE digit_oracle(pixels) = 7 LIMIT {k} BUDGET 400"
            ).fetchall()
        except psycopg.Error as exc:  # pragma: no cover - the message says why
            pytest.fail(str(exc))
    assert len(rows) == k and {r[0] for r in rows} <= truth
