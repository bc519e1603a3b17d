"""bench_planner's speed sections: a cold exact full scan against the hand-written job, side by
side, and a fully cached scan against plain tables holding the same outputs.

The hand-written job is what one writes without SieveDB: read every input straight from
Postgres (COPY, parsed with numpy), run the ONNX file with ONNX Runtime in this process, COPY the
labels back into a table, then run the query over it. It talks to Postgres directly (no proxy).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg

MODEL = "digit_oracle"
SCAN_SQL = f"SELECT count(*) FROM blobs WHERE {MODEL}(pixels) = 3"
JOB_SQL = "SELECT count(*) FROM eager WHERE digit = 3"


def parse_copy_out(text: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``id\\t{p1,...,pW}`` lines as (ids, float32 [n, W])."""
    flat = np.array(
        text.translate(str.maketrans("\t\n", ",,", "{}")).rstrip(",").split(","), dtype=np.float64
    )
    table = flat.reshape(-1, width + 1)
    return table[:, 0].astype(np.int64), table[:, 1:].astype(np.float32)


@dataclass
class Job:
    """One run of the hand-written job: seconds per step, and the labels it computed."""

    read_s: float = 0.0
    infer_s: float = 0.0
    write_s: float = 0.0
    query_s: float = 0.0
    answer: object = None
    labels: dict[int, int] = field(default_factory=dict)

    @property
    def materialize_s(self) -> float:
        return self.read_s + self.infer_s + self.write_s

    @property
    def total_s(self) -> float:
        return self.materialize_s + self.query_s


def hand_written_job(conn: psycopg.Connection, model_path: Path, width: int, query: str = JOB_SQL) -> Job:
    """Read every input, run the model in this process, COPY the labels into ``eager``, query."""
    import onnxruntime as ort

    job = Job()
    began = time.perf_counter()
    with conn.cursor().copy("COPY (SELECT id, pixels FROM blobs) TO STDOUT") as copy:
        text = b"".join(bytes(data) for data in copy).decode()
    ids, pixels = parse_copy_out(text, width)
    job.read_s = time.perf_counter() - began

    began = time.perf_counter()
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    labels = np.concatenate(
        [
            session.run(["label"], {name: pixels[i : i + 8192]})[0].reshape(-1)
            for i in range(0, len(pixels), 8192)
        ]
    )
    job.infer_s = time.perf_counter() - began

    began = time.perf_counter()
    conn.execute("DROP TABLE IF EXISTS eager")
    conn.execute("CREATE TABLE eager (id int PRIMARY KEY, digit int)")
    with conn.cursor().copy("COPY eager (id, digit) FROM STDIN") as copy:
        copy.write("".join(f"{i}\t{d}\n" for i, d in zip(ids.tolist(), labels.tolist(), strict=True)))
    conn.execute("ANALYZE eager")
    job.write_s = time.perf_counter() - began

    began = time.perf_counter()
    job.answer = conn.execute(query).fetchall()
    job.query_s = time.perf_counter() - began
    job.labels = dict(zip(ids.tolist(), labels.tolist(), strict=True))
    return job


def timed(cur, sql: str) -> tuple[float, list]:
    began = time.perf_counter()
    rows = cur.execute(sql).fetchall()
    return time.perf_counter() - began, rows


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- (1) a cold full scan against the hand-written job ----------------------------------------------


@dataclass
class FullScan:
    sieve_s: list[float] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    answers_equal: bool = True

    @property
    def ratio(self) -> float:
        """The job's median time over SieveDB's: >= 1.0 means SieveDB is as fast or faster."""
        return median([j.total_s for j in self.jobs]) / median(self.sieve_s)


def full_scan_vs_job(
    sieve: psycopg.Connection, direct: psycopg.Connection, model_path: Path, rounds: int, left: Callable
) -> FullScan:
    """Alternate, ``rounds`` times: SieveDB's full scan from a cleared cache, then the job."""
    out = FullScan()
    cur = psycopg.ClientCursor(sieve)  # the simple query protocol
    for k in range(rounds):
        left()
        sieve.execute(f"SELECT sieve.clear_cache('{MODEL}')")
        order = [_sieve_round, _job_round] if k % 2 == 0 else [_job_round, _sieve_round]
        for step in order:
            step(out, cur, direct, model_path)
    return out


def _sieve_round(out: FullScan, cur, direct, model_path: Path) -> None:
    seconds, rows = timed(cur, SCAN_SQL)
    out.sieve_s.append(seconds)
    out.answers_equal &= not out.jobs or rows == out.jobs[-1].answer


def _job_round(out: FullScan, cur, direct, model_path: Path) -> None:
    out.jobs.append(hand_written_job(direct, model_path, 64))


# -- (2) a fully cached scan against plain tables of the outputs --------------------------------


@dataclass
class CachedScan:
    rows: int
    build_s: float = 0.0
    cold_s: float = 0.0
    cold_calls: int | None = None
    timings: dict[str, list[float]] = field(default_factory=dict)
    answers: dict[str, object] = field(default_factory=dict)
    calls_cached: int | None = None
    function_s: float | None = None  # the installed SQL function, per row (the read before maps)

    def ratio(self, plain: str) -> float:
        return median(self.timings["sievedb"]) / median(self.timings[plain])


CACHED_QUERIES = {
    "sievedb": f"SELECT count(*) FROM big WHERE {MODEL}(pixels) = 3",
    "outputs table": "SELECT count(*) FROM big_outputs WHERE digit = 3",
    "inputs+outputs table": "SELECT count(*) FROM big_with WHERE digit = 3",
    "plain scan of big": "SELECT count(*) FROM big",
}


def build_big(direct: psycopg.Connection, rows: int, base_rows: int) -> float:
    """``big (id, pixels)``: ``rows`` rows, copies of blobs each shifted by 1e-4 (distinct inputs)."""
    began = time.perf_counter()
    copies = -(-rows // base_rows)
    direct.execute("DROP TABLE IF EXISTS big, big_outputs, big_with")
    direct.execute(
        "CREATE TABLE big AS SELECT (b.id + k * %s)::int AS id, "
        "ARRAY(SELECT v + k * 0.0001 FROM unnest(b.pixels) AS v)::real[] AS pixels "
        "FROM blobs b, generate_series(0, %s) AS k WHERE b.id + k * %s < %s",
        (base_rows, copies - 1, base_rows, rows),
    )
    direct.execute("ALTER TABLE big ADD PRIMARY KEY (id)")
    direct.execute("VACUUM ANALYZE big")
    return time.perf_counter() - began


def cached_scan_vs_tables(
    sieve: psycopg.Connection,
    direct: psycopg.Connection,
    rows: int,
    base_rows: int,
    rounds: int,
    with_function: bool,
    left: Callable,
    calls_of: Callable[[str], int | None],
) -> CachedScan:
    """Materialize ``big`` once, make the plain tables, then time the same count four ways in
    rotating rounds; with ``with_function``, once more straight on Postgres through the
    installed function (every row digested and looked up)."""
    out = CachedScan(rows, build_s=build_big(direct, rows, base_rows))
    cur = psycopg.ClientCursor(sieve)
    left()
    out.cold_s, _ = timed(cur, CACHED_QUERIES["sievedb"])
    out.cold_calls = calls_of(CACHED_QUERIES["sievedb"])
    cur.execute(f"CREATE TABLE big_outputs AS SELECT id, {MODEL}(pixels) AS digit FROM big")
    cur.execute(f"CREATE TABLE big_with AS SELECT *, {MODEL}(pixels) AS digit FROM big")
    for table in ("big_outputs", "big_with"):
        direct.execute(f"VACUUM ANALYZE {table}")
    names = list(CACHED_QUERIES)
    for k in range(rounds):
        left()
        for name in names[k % len(names) :] + names[: k % len(names)]:
            seconds, answer = timed(cur, CACHED_QUERIES[name])
            out.timings.setdefault(name, []).append(seconds)
            out.answers[name] = answer
    out.calls_cached = calls_of(CACHED_QUERIES["sievedb"])
    if with_function:
        left()
        out.function_s, answer = timed(direct, CACHED_QUERIES["sievedb"])
        out.answers["installed function"] = answer
    return out


def answers_agree(scan: CachedScan) -> bool:
    counted = {k: v for k, v in scan.answers.items() if k != "plain scan of big"}
    return len({repr(v) for v in counted.values()}) == 1


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def report(full: FullScan, cached: CachedScan | None, rows: int) -> list[str]:
    jobs = full.jobs
    step = {
        name: median([getattr(j, name) for j in jobs]) for name in ("read_s", "infer_s", "write_s", "query_s")
    }
    totals = [j.total_s for j in jobs]
    out = [
        "",
        f"Exact full scan, cold, against the hand-written job ({len(full.sieve_s)} rounds each, alternating; "
        f"{rows:,} rows): {SCAN_SQL}",
        f"  sievedb   median {median(full.sieve_s):.3f}s  (runs {_runs(full.sieve_s)})",
        f"  job       median {median(totals):.3f}s  (runs {_runs(totals)}; "
        f"read {step['read_s']:.2f} + ONNX Runtime {step['infer_s']:.2f} + COPY back {step['write_s']:.2f} "
        f"+ query {step['query_s']:.3f})",
        f"  job / sievedb = {full.ratio:.2f}x   (same answer: {'yes' if full.answers_equal else 'NO'})",
    ]
    if cached is None:
        return out
    calls = cached.cold_calls or 0
    out += [
        "",
        f"Fully cached scan at {cached.rows:,} rows (big: blobs copied, each copy shifted; built in "
        f"{cached.build_s:.1f}s). Cold first: {cached.cold_s:.2f}s, {calls:,} model calls "
        f"({calls / cached.cold_s:,.0f} rows/s)",
    ]
    for name, sql in CACHED_QUERIES.items():
        out.append(f"  {name:22s} median {median(cached.timings.get(name, [])):.4f}s  {sql}")
    if cached.function_s is not None:
        out.append(
            f"  {'installed function':22s} once   {cached.function_s:.4f}s  the same count straight on "
            "Postgres (every row digested and looked up: the read of every cached statement before row maps)"
        )
    out.append(
        f"  sievedb / outputs table = {cached.ratio('outputs table'):.1f}x; sievedb / inputs+outputs "
        f"table = {cached.ratio('inputs+outputs table'):.1f}x; model calls on the cached runs: "
        f"{cached.calls_cached}; same answers: {'yes' if answers_agree(cached) else 'NO'}"
    )
    return out
