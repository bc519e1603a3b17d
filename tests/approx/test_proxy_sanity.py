"""Proxy sanity through SQL: a reversed proxy is named in a NOTICE, flipped when cached labels
(independent of the query's draws) show it backwards, and a proxy-ordered LIMIT stops at its
default cost cap and finishes in scan order."""

from __future__ import annotations

from tests.approx.test_approx_sql import _truth

REVERSED = "1 - digit_proxy_p7(pixels)"


def _notices(conn) -> list[str]:
    found: list[str] = []
    conn.add_notice_handler(lambda d: found.append(d.message_primary))
    return found


def test_a_reversed_proxy_gets_a_notice_and_the_answer_keeps_its_target(approx_world):
    truth = set(_truth(approx_world).tolist())
    with approx_world.connect() as conn:
        notices = _notices(conn)
        conn.execute("set sieve.seed = 5")
        rows = conn.execute(
            "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 RECALL TARGET 80% BUDGET 600 "
            f"USING PROXY {REVERSED}"
        ).fetchall()
    found = {r[0] for r in rows}
    assert len(found & truth) >= 0.8 * len(truth)  # recall held (this seed; the bound is the guarantee)
    assert any("ranks backwards" in n and "1 - (1 - digit_proxy_p7(pixels))" in n for n in notices), notices


def test_cached_labels_flip_a_reversed_proxy(approx_world):
    with approx_world.connect() as conn:
        notices = _notices(conn)
        conn.execute("select sieve.clear_cache('digit_oracle')")
        conn.execute("SELECT count(*) FROM digits WHERE digit_oracle(pixels) = 7 AND id < 900").fetchall()
        # no seed: cached labels are free and independent of this query's draws
        conn.execute(
            "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 RECALL TARGET 90% BUDGET 300 "
            f"USING PROXY {REVERSED}"
        ).fetchall()
    assert any("used flipped (1 - score)" in n for n in notices), notices


def test_a_proxy_ordered_limit_stops_at_its_default_cap_then_scans(approx_world):
    truth = set(_truth(approx_world).tolist())
    with approx_world.connect() as conn:
        notices = _notices(conn)
        conn.execute("set sieve.seed = 6")
        conn.execute("select sieve.clear_cache('digit_oracle')")
        before = conn.execute("select coalesce(max(query_id), 0) from sieve.query_log").fetchone()[0]
        rows = conn.execute(
            f"SELECT id FROM digits WHERE digit_oracle(pixels) = 7 LIMIT 150 USING PROXY {REVERSED}"
        ).fetchall()
        log = conn.execute(
            "select mode, rows_labelled from sieve.query_log where query_id > %s order by query_id", [before]
        ).fetchall()
    ids = [r[0] for r in rows]
    assert len(ids) == 150 and len(set(ids)) == 150 and set(ids) <= truth
    assert log[0] == ("limit", 1000), log  # the cap: 1,000 labelled rows, no more
    assert log[-1][0] == "exact", log  # then the statement ran as an exact LIMIT
    assert any("scan order" in n for n in notices), notices


def test_a_budget_written_is_a_hard_cap_for_a_limit(approx_world):
    with approx_world.connect() as conn:
        notices = _notices(conn)
        conn.execute("set sieve.seed = 7")
        rows = conn.execute(
            "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 LIMIT 150 BUDGET 200 "
            f"USING PROXY {REVERSED}"
        ).fetchall()
        (labelled,) = conn.execute(
            "select rows_labelled from sieve.query_log order by query_id desc limit 1"
        ).fetchone()
    assert len(rows) < 150 and labelled <= 200
    assert not any("scan order" in n for n in notices), notices
