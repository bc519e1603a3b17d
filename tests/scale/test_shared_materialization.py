"""Sessions on two front-ends materializing overlapping inputs of one model at once: right
answers, no deadlock (40P01), and the model runs about once per distinct input."""

from __future__ import annotations

import numpy as np
import psycopg

from tests.support.frontends import run_at_once
from tests.support.model_files import direct_run

ROUNDS = 3
MAX_FACTOR = 1.2  # total model calls / distinct inputs (issue 14)
# (front-end, first id, last id + 1): every range overlaps two others; together, every row
RANGES = [(0, 0, 1000), (1, 500, 1500), (0, 900, 1797), (1, 0, 700)]


def _round(frontends, tag: str) -> tuple[list, list]:
    dsns = [frontends.dsn(which) for which, _, _ in RANGES]
    statements = [
        f"/* {tag} s{k} */ select id, digit from shared_v where id >= {lo} and id < {hi} order by id"
        for k, (_, lo, hi) in enumerate(RANGES)
    ]
    answers, errors = run_at_once(dsns, statements)
    return [None if rows is None else [d for _, d in rows] for rows in answers], errors


def test_two_frontends_share_overlapping_materialization(frontends, scale_models):
    with psycopg.connect(frontends.dsn(0), autocommit=True) as a:
        a.execute(
            "create function shared_label(pixels real[]) returns int language onnx "
            """as 'wide_mlp.onnx', '{"output": "label"}'"""
        )
        a.execute("create view shared_v as select id, shared_label(pixels) as digit from digits")
        pixels = a.execute("select pixels from digits order by id").fetchall()
        distinct = a.execute("select count(distinct pixels) from digits").fetchone()[0]
    expected = direct_run(
        scale_models / "wide_mlp.onnx", {"X": np.asarray([p[0] for p in pixels], np.float32)}
    )
    expected = expected["label"].tolist()
    factors = []
    for r in range(ROUNDS):
        with psycopg.connect(frontends.dsn(r % 2), autocommit=True) as conn:
            conn.execute("select sieve.clear_cache('shared_label')")
        tag = f"shared round {r}"
        answers, errors = _round(frontends, tag)
        assert errors == [], errors  # no 40P01, nothing
        for (_, lo, hi), got in zip(RANGES, answers, strict=True):
            assert got == expected[lo:hi]
        with psycopg.connect(frontends.dsn(0), autocommit=True) as conn:
            calls = conn.execute(
                "select coalesce((model_calls->>'shared_label')::int, 0) from sieve.query_log "
                "where query like %s",
                (f"/* {tag} %",),
            ).fetchall()
            # the sessions really ran at once: their planned spans (logged at the end) overlap
            overlap = conn.execute(
                "select max(started_at - elapsed_ms * interval '1 ms') < min(started_at), max(elapsed_ms) "
                "from sieve.query_log where query like %s",
                (f"/* {tag} %",),
            ).fetchone()
        print(f"round {r}: calls by session {[c for (c,) in calls]}, longest {overlap[1]:.0f} ms")
        assert len(calls) == len(RANGES) and overlap[0]
        factors.append(sum(c for (c,) in calls) / distinct)
    print(f"distinct inputs {distinct}; total model calls / distinct per round {factors}")
    assert all(1.0 <= f <= MAX_FACTOR for f in factors), factors
