"""Cache-key cost: md5 vs sha256 over the send form of 100,000 real[64] arrays.

    .venv/bin/python bench/bench_digest.py

Runs a throwaway embedded PostgreSQL on a free TCP port; prints the median of 5 rounds for the
digest alone and for count(DISTINCT digest).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402

from tests.support.servers import PlainPostgres  # noqa: E402

EXPRESSIONS = {"md5()::uuid": "md5(array_send(pixels))::uuid", "sha256()": "sha256(array_send(pixels))"}


def main(rows: int = 100_000, rounds: int = 5) -> None:
    pg = PlainPostgres(Path(tempfile.mkdtemp()) / "pg").start()
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(
                "create table blobs as select i as id, array(select random()::real "
                "from generate_series(1, 64) where i > 0) as pixels from generate_series(1, %s) i",
                (rows,),
            )
            conn.execute("vacuum analyze blobs")
            times: dict[str, list[float]] = {}
            for _ in range(rounds):
                for name, expr in EXPRESSIONS.items():
                    for what, sql in (
                        ("digest", f"select count(*) from blobs where {expr} is not null"),
                        ("count(distinct)", f"select count(distinct {expr}) from blobs"),
                    ):
                        started = time.perf_counter()
                        conn.execute(sql).fetchone()
                        times.setdefault(f"{name:12s} {what}", []).append(time.perf_counter() - started)
        for label, values in times.items():
            print(f"{label:32s} {statistics.median(values):.3f} s per {rows:,} arrays")
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
