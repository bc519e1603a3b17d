"""Planner shapes benchmark: model calls of chained and LIMIT queries against the naive plan,
and the planner's overhead on first-seen and cached statements.

One SieveDB server (embedded PostgreSQL 18, ``--inference-workers 1``) over the synthetic
video-analytics world of the tests (tests/support/video.py: ``--frames`` frames, a detector
with several boxes per frame, a colour model per box, per-frame count and traffic-light models,
views ``objects`` -> ``colors`` and ``frame_stats``), and the demo's digits with its two models
(``server.demo``) for the README's LIMIT example. Each query runs from cold caches; calls come
from ``sieve.query_log``. The naive plan runs every model on every input the view reads (what
SieveDB did before the rewrite passes: measured on main b11938e as 1,000 detector calls for the
chained point query and 1,797 calls of both models for the README LIMIT).

    .venv/bin/python bench/bench_planner_shapes.py [--frames 1000] [--overhead-n 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.servers import SieveProcess  # noqa: E402
from tests.support.video import build_world, clear_caches, install, last_query_id, logged_calls  # noqa: E402

CHAIN = "SELECT * FROM colors WHERE frame = 270"
VIEW_LIMIT = "SELECT id FROM digit_predictions WHERE digit = 7 LIMIT 10"


def calls_of(conn: psycopg.Connection, sql: str) -> tuple[dict[str, int], float]:
    mark = last_query_id(conn)
    started = time.perf_counter()
    conn.execute(sql).fetchall()
    return logged_calls(conn, mark), time.perf_counter() - started


def overhead(conn: psycopg.Connection, sql: str, plain: str, n: int) -> tuple[float, float, float]:
    """p50 ms of ``sql`` first seen (a new text each time), cached, and of the model-free ``plain``."""
    conn.execute(sql).fetchall()  # outputs cached
    first, cached, base = [], [], []
    for i in range(n):
        for sample, text in ((first, f"{sql} AND {i} = {i}"), (cached, sql), (base, plain)):
            started = time.perf_counter()
            conn.execute(text).fetchall()
            sample.append(1000 * (time.perf_counter() - started))
    return statistics.median(first), statistics.median(cached), statistics.median(base)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--overhead-n", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sieve-bench-shapes-") as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        world = build_world(models, n_frames=args.frames)
        server = SieveProcess(
            data_dir=Path(tmp) / "data",
            extra_args=["--models-dir", str(models), "--inference-workers", "1", "--demo"],
        ).start()
        try:
            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                install(conn, world)
                report(conn, world, args)
        finally:
            server.stop()


def wait_for_demo(conn: psycopg.Connection, timeout: float = 300) -> None:
    """The demo loads its data after the server starts listening."""
    deadline = time.monotonic() + timeout
    while conn.execute("SELECT to_regclass('digit_predictions')").fetchone()[0] is None:
        if time.monotonic() > deadline:
            raise SystemExit("the demo did not load within the time limit")
        time.sleep(0.5)


def report(conn: psycopg.Connection, world, args) -> None:
    wait_for_demo(conn)
    clear_caches(conn)
    chain, chain_s = calls_of(conn, CHAIN)
    boxes = len(world.objects_of([270]))
    print(f"chained point query  {CHAIN}")
    print(f"  calls {chain} (minimal: detect 1, color {boxes}; naive: detect {args.frames})  {chain_s:.3f} s")
    print(f"  detector calls vs naive: {chain.get('detect', 0) / args.frames:.4f}x")
    rows = conn.execute("SELECT count(*) FROM digits").fetchone()[0]
    for model in conn.execute("SELECT name FROM sieve.models WHERE name LIKE 'digit%'").fetchall():
        conn.execute("SELECT sieve.clear_cache(%s)", model)
    limit, limit_s = calls_of(conn, VIEW_LIMIT)
    share = max(limit.values(), default=0) / rows
    print(f"view LIMIT           {VIEW_LIMIT}")
    print(
        f"  calls {limit} of {rows} rows: {share:.1%} (target < 25%; naive: both models, every row)"
        f"  {limit_s:.3f} s"
    )
    first, cached, base = overhead(
        conn,
        "SELECT * FROM colors WHERE frame < 20",
        "SELECT * FROM frames WHERE frame < 20",
        args.overhead_n,
    )
    print("statement overhead (p50 ms, simple protocol, outputs cached)")
    print(f"  first-seen {first:.2f}  cached {cached:.2f}  model-free statement {base:.2f}")
    print(f"  first-seen / model-free {first / base:.2f}x, cached / model-free {cached / base:.2f}x")


if __name__ == "__main__":
    main()
