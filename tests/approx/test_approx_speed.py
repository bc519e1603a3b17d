"""The fast paths of approximate queries answer exactly as the general ones.

``USING PROXY cheap_model(x)`` (a bare call of a model with one scalar output) reads its scores
by joining the model's cache once; any other proxy expression (here ``cheap_model(x) * 1``, the
same scores) goes through the materialization pass and the model function row by row. Under the
same seed both must pick the same rows, make the same oracle calls and count the same cache hits.
"""

from __future__ import annotations

import pytest

PROXY = "digit_proxy_p7(pixels)"
GENERAL = "digit_proxy_p7(pixels) * 1"  # not a bare call: the general path, the same scores

QUERIES = {
    "recall": "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 "
    "RECALL TARGET 90% BUDGET 400 USING PROXY {proxy}",
    "precision": "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 AND id % 3 <> 0 "
    "PRECISION TARGET 90% BUDGET 300 USING PROXY {proxy}",
    "cascade": "SELECT d.id FROM digits AS d WHERE digit_oracle(d.pixels) = 7 "
    "RECALL TARGET 80% PRECISION TARGET 80% BUDGET 400 USING PROXY {proxy}",
    "limit": "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 LIMIT 5 USING PROXY {proxy}",
    "count": "SELECT count(*) FROM digits WHERE digit_oracle(pixels) = 7 "
    "ERROR TARGET 10% BUDGET 300 USING PROXY {proxy}",
    "grouped": "SELECT label % 2, avg(score) FROM digits WHERE digit_oracle(pixels) = 7 GROUP BY label % 2 "
    "ERROR TARGET 20% BUDGET 300 USING PROXY {proxy}",
}


def _run(conn, sql: str, seed: int, clear: tuple[str, ...] = ("digit_oracle",)):
    for model in clear:
        conn.execute(f"SELECT sieve.clear_cache('{model}')")
    conn.execute(f"set sieve.seed = {seed}")
    rows = sorted(conn.execute(sql).fetchall())
    calls, hits = conn.execute(
        "select model_calls, cache_hits from sieve.query_log order by query_id desc limit 1"
    ).fetchone()
    return rows, calls, hits


@pytest.mark.parametrize("name", list(QUERIES))
def test_a_bare_model_proxy_answers_as_the_general_path(approx_world, name):
    sql = QUERIES[name]
    with approx_world.connect() as conn:
        conn.execute(f"SELECT id, {PROXY} FROM digits")  # the proxy's outputs are cached
        for seed in (1, 2):
            fast = _run(conn, sql.format(proxy=PROXY), seed)
            general = _run(conn, sql.format(proxy=GENERAL), seed)
            assert fast == general, name
            assert fast[0], name
        conn.execute("reset sieve.seed")


def test_a_cold_proxy_cache_is_filled_once_then_read_by_the_join(approx_world):
    sql = QUERIES["recall"]
    with approx_world.connect() as conn:
        both = ("digit_oracle", "digit_proxy_p7")
        fast = _run(conn, sql.format(proxy=PROXY), 3, clear=both)
        general = _run(conn, sql.format(proxy=GENERAL), 3, clear=both)
        assert fast == general
        distinct = conn.execute("SELECT count(DISTINCT pixels) FROM digits").fetchone()[0]
        assert fast[1]["digit_proxy_p7"] == distinct  # every distinct input ran once
        warm = _run(conn, sql.format(proxy=PROXY), 3)  # now cached: no proxy call, same answer
        assert warm[0] == fast[0] and warm[1]["digit_proxy_p7"] == 0
        assert warm[1]["digit_oracle"] == fast[1]["digit_oracle"]
        conn.execute("reset sieve.seed")


def test_a_join_of_tables_keys_rows_by_every_ctid_on_both_paths(approx_world):
    sql = (
        "SELECT d.id FROM digits d JOIN speed_parity p ON p.id = d.id WHERE p.odd AND "
        "digit_oracle(d.pixels) = 7 RECALL TARGET 90% BUDGET 300 USING PROXY {proxy}"
    )
    with approx_world.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS speed_parity AS SELECT id, id % 2 = 1 AS odd FROM digits")
        conn.execute("SELECT digit_proxy_p7(pixels) FROM digits")
        fast = _run(conn, sql.format(proxy="digit_proxy_p7(d.pixels)"), 5)
        general = _run(conn, sql.format(proxy="digit_proxy_p7(d.pixels) * 1"), 5)
        assert fast == general
        assert fast[0] and all(r[0] % 2 == 1 for r in fast[0])
        conn.execute("reset sieve.seed")


def test_cached_oracle_outputs_are_found_by_digest(approx_world):
    """An unseeded run reads the oracle outputs already cached (one semi-join on the inputs'
    digests): the rows of an identical input count too, and the known positives come back."""
    sql = (
        "SELECT id FROM digits WHERE digit_oracle(pixels) = 7 "
        "RECALL TARGET 90% BUDGET 300 USING PROXY digit_proxy_p7(pixels)"
    )
    notices: list[str] = []
    with approx_world.connect() as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("reset sieve.seed")
        conn.execute("SELECT sieve.clear_cache('digit_oracle')")
        sevens = {
            r[0] for r in conn.execute("SELECT id FROM digits WHERE id < 200 AND digit_oracle(pixels) = 7")
        }
        cached = conn.execute(
            "SELECT count(*) FROM digits d WHERE EXISTS (SELECT 1 FROM digits e WHERE e.id < 200 "
            "AND e.pixels = d.pixels)"
        ).fetchone()[0]
        positives = conn.execute(
            "SELECT count(*) FROM digits d WHERE EXISTS (SELECT 1 FROM digits e WHERE e.id < 200 "
            f"AND e.pixels = d.pixels AND e.id IN ({','.join(map(str, sevens)) or 'NULL'}))"
        ).fetchone()[0]
        notices.clear()
        rows = {r[0] for r in conn.execute(sql).fetchall()}
        note = next(n for n in notices if "recall target 90%" in n)
        assert f"{cached} candidate rows had cached oracle outputs ({positives} positive)" in note, note
        assert sevens <= rows
