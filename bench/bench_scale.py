"""Per-component costs of SieveDB past one machine, measured here, and the scale simulation fed by them.

    .venv/bin/python bench/bench_scale.py [--quick] [--rows 40000] [--json FILE] [--keep]

As root it re-runs itself inside a network namespace with only ``lo`` up (``unshare -n``), so that Ray
(which advertises the machine's address) and everything else stays on 127.0.0.1. Sections:

1. **Models**: a light model (logistic regression over 64 features) and a heavy one (an MLP
   64-512-512-512-1), both built with onnx.helper; bare ONNX Runtime time per row at the batch size
   (one thread, as one replica), and their ratio.
2. **Cache writes**: rows/s of binary COPY into a table shaped like a model cache
   (``digest bytea, ordinal int, score real``, primary key), one batch per transaction, as the
   materializer writes, with 1 and 2 writers.
3. **Front-ends** (two ``sievedb serve --postgres-dsn`` over one Postgres, one inference worker
   each): front-end CPU per statement (the server process's schedstat, all threads) for a forwarded
   ``SELECT 1`` and a planned statement over cached rows (their difference is the planner's work);
   a cold scan through 1 front-end with its rows/s and the CPU per row of the front-end, its
   inference worker and all of Postgres; rows/s through 2 front-ends (each scanning half); how
   often a batch waits for a digest claim (``pg_locks`` sampled); the duplicate-work factor when
   both run the same cold query at once (model calls from ``sieve.query_log`` / distinct inputs);
   and a cold heavy scan through a front-end on the 2-node Ray cluster.
4. **Backends**: rows/s of the local pool (1 and 2 worker processes) and of Ray with 1 and 2 nodes
   (``ray.cluster_utils.Cluster``, 1 CPU per node, one replica per node), light and heavy, as ratios
   to the local pool with 1 worker in the same run; Ray's overhead per batch (a no-op actor call, a
   real batch, and the bare batch). ``inference.ray_pool.RayInferencePool`` serves the Ray rows when
   it exists, else a minimal actor pool in this file (the report says which).
5. **Simulation** (``bench/scale_sim.py``) fed by those costs: predicted vs measured for each
   configuration this machine runs (the scans' non-CPU wait fitted on the 1-front-end scan), then
   the plan for N front-ends x M GPUs and where the bottleneck moves, and the issue's 20 ms/frame
   detector over 10^8 frames.

The full run takes about 2 minutes; ``--quick`` (16,000 rows, shorter runs) about 1. Small
shared hosts make figures noisy; compare only ratios from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import scale_sim as sim  # noqa: E402
from planner.site_pass import LANES  # noqa: E402  (claim lanes per model, for the simulation)

log = logging.getLogger("bench_scale")
FEATURES = 64
BATCH = 4096  # the materializer's chunk (planner.materialize.CHUNK_ROWS) and the pool's batch cap
HEAVY_WIDTH = 512
WARM_ROWS = 2 * BATCH  # rows past every timed scan: models load and replicas start on these


# -- models ---------------------------------------------------------------------------------------


def _dense_model(path: Path, dims: list[int], seed: int, final: str) -> None:
    """An MLP over ``dims`` (ReLU between layers) ending in ``final`` (Sigmoid), output ``score`` [N, 1]."""
    from onnx import TensorProto, helper

    from tests.inference.models import relu_layers

    inits, nodes, prev = relu_layers(dims, np.random.default_rng(seed))
    nodes.append(helper.make_node(final, [prev], ["score"]))
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", dims[0]])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", dims[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


def build_models(models_dir: Path) -> dict[str, Path]:
    """light: logistic regression over 64 features; heavy: a 64-512-512-512-1 MLP."""
    models_dir.mkdir(parents=True, exist_ok=True)
    paths = {"light": models_dir / "light.onnx", "heavy": models_dir / "heavy.onnx"}
    _dense_model(paths["light"], [FEATURES, 1], seed=1, final="Sigmoid")
    _dense_model(
        paths["heavy"], [FEATURES, HEAVY_WIDTH, HEAVY_WIDTH, HEAVY_WIDTH, 1], seed=2, final="Sigmoid"
    )
    return paths


def inputs(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, FEATURES), dtype=np.float32)


def one_thread_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def bare_s_per_batch(path: Path, x: np.ndarray, seconds: float) -> float:
    """Median seconds of one ``session.run`` on ``x`` (one thread: one replica's share)."""
    session = one_thread_session(path)
    session.run(None, {"X": x})
    times, stop = [], time.perf_counter() + seconds
    while time.perf_counter() < stop or len(times) < 3:
        began = time.perf_counter()
        session.run(None, {"X": x})
        times.append(time.perf_counter() - began)
    return statistics.median(times)


# -- CPU accounting --------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """CPU seconds of one process, all its threads, not its children (schedstat: nanoseconds)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], list(parents.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += parents.get(pid, [])
    return out


def children_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root``'s descendants: the live ones' own (schedstat), and what reaped ones
    left in their parents' cutime/cstime (clock ticks)."""
    tick = os.sysconf("SC_CLK_TCK")
    live = descendants(root)
    total = 0.0
    for pid in [root, *live]:
        if fields := _stat(pid):
            total += (int(fields[13]) + int(fields[14])) / tick
    for pid in live:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += proc_cpu_seconds(pid)
    return total


def other_cores(seconds: float = 2.0) -> float:
    """Cores that other processes keep busy while this benchmark idles (a shared host)."""

    def busy() -> float:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        )
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    before, own = busy(), tree_cpu_seconds(os.getpid())
    time.sleep(seconds)
    return max(0.0, (busy() - before) - (tree_cpu_seconds(os.getpid()) - own)) / seconds


def tree_cpu_seconds(root: int) -> float:
    return proc_cpu_seconds(root) + children_cpu_seconds(root)


# -- cache writes into Postgres --------------------------------------------------------------------


async def copy_rate(dsn: str, rows: int, writers: int) -> float:
    """Rows/s of binary COPY into cache-shaped tables, BATCH rows per transaction, ``writers`` at once."""
    import asyncpg

    rng = np.random.default_rng(7)
    per_writer = rows // writers
    conns = [await asyncpg.connect(dsn) for _ in range(writers)]
    try:
        await conns[0].execute(
            "DROP TABLE IF EXISTS bench_cache; CREATE TABLE bench_cache (digest bytea NOT NULL, "
            "ordinal integer NOT NULL DEFAULT 0, score real, PRIMARY KEY (digest, ordinal))"
        )
        batches = [
            [(rng.bytes(16), 0, float(v)) for v in rng.random(min(BATCH, per_writer - start))]
            for start in range(0, per_writer, BATCH)
        ]

        async def write(conn) -> None:
            for batch in batches:
                batch = [(rng.bytes(16), o, s) for _, o, s in batch]  # fresh digests: no conflicts
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "bench_cache", records=sorted(batch), columns=["digest", "ordinal", "score"]
                    )

        began = time.perf_counter()
        await asyncio.gather(*(write(c) for c in conns))
        elapsed = time.perf_counter() - began
        return sum(len(b) for b in batches) * writers / elapsed
    finally:
        for conn in conns:
            await conn.close()


# -- front-ends --------------------------------------------------------------------------------------


@dataclass
class FrontendFigures:
    cpu_s_forwarded: float = 0.0  # per SELECT 1
    cpu_s_planned: float = 0.0  # per planned statement over cached rows
    cpu_s_per_row: dict[str, float] = field(default_factory=dict)  # model -> per materialized row
    rows_per_s_1fe: dict[str, float] = field(default_factory=dict)
    rows_per_s_2fe: dict[str, float] = field(default_factory=dict)
    worker_cpu_s_per_row: dict[str, float] = field(default_factory=dict)  # the front-end's inference worker
    pg_cpu_s_per_row: dict[str, float] = field(default_factory=dict)  # every Postgres process
    claim_wait_1fe: dict[str, float] = field(default_factory=dict)  # share of samples with a claim waiting
    claim_wait_2fe: dict[str, float] = field(default_factory=dict)
    rows_per_s_2fe_two_models: float = 0.0  # light on one front-end, light_twin on the other
    claim_wait_2fe_two_models: float = 0.0
    duplicate_factor: float = 0.0
    duplicate_calls: int = 0
    duplicate_inputs: int = 0


@dataclass
class Frontend:
    """A running ``sievedb serve`` and the password its clients relay to the backing Postgres."""

    proc: object  # tests.support.servers.SieveProcess
    password: str

    @property
    def pid(self) -> int:
        return self.proc.proc.pid

    def dsn(self) -> str:
        return self.proc.dsn(password=self.password)


def _connect(server: Frontend):
    import psycopg

    return psycopg.connect(server.dsn(), autocommit=True, prepare_threshold=None)


def _simple(conn, sql: str) -> list:
    import psycopg

    cur = psycopg.ClientCursor(conn)  # the simple query protocol, always
    cur.execute(sql)
    return cur.fetchall() if cur.description else []


def load_blobs(dsn: str, x: np.ndarray) -> None:
    import asyncpg

    async def load() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TABLE blobs (id int PRIMARY KEY, pixels real[])")
            await conn.copy_records_to_table("blobs", records=[(i, row.tolist()) for i, row in enumerate(x)])
            await conn.execute("ANALYZE blobs")
        finally:
            await conn.close()

    asyncio.run(load())


def create_models(conn) -> None:
    # light_twin: the light model's file under another name, so a model of its own (own claims,
    # own cache): the control for two front-ends sharing one model's claim lanes.
    for name, file in (("light", "light"), ("heavy", "heavy"), ("light_twin", "light")):
        _simple(
            conn,
            f"CREATE FUNCTION {name}_score(pixels real[]) RETURNS real LANGUAGE onnx "
            f"AS '{file}.onnx', '{{\"output\": \"score\"}}'",
        )
        _simple(conn, f"CREATE VIEW {name}_view AS SELECT b.id, {name}_score(b.pixels) AS score FROM blobs b")


def cpu_per_statement(server, conn, sql: str, n: int) -> float:
    _simple(conn, sql)
    before = proc_cpu_seconds(server.pid)
    for _ in range(n):
        _simple(conn, sql)
    return (proc_cpu_seconds(server.pid) - before) / n


def scan_sql(model: str, lo: int, hi: int) -> str:
    return f"SELECT count(*) FROM {model}_view WHERE id >= {lo} AND id < {hi} AND score > 0.5"


class ClaimWaits:
    """Samples, in a thread, whether some batch waits for a claim (an advisory lock not granted):
    ``share`` is the fraction of samples in which one did."""

    def __init__(self, pg_dsn: str, every_s: float = 0.01) -> None:
        import threading

        self.pg_dsn, self.every_s = pg_dsn, every_s
        self.samples = self.waiting = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.pg_dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                self.samples += 1
                self.waiting += row.fetchone()[0] > 0
                self._stop.wait(self.every_s)

    def __enter__(self) -> ClaimWaits:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def share(self) -> float:
        return self.waiting / self.samples if self.samples else 0.0


def timed_scans(pairs: list[tuple[object, str]]) -> float:
    """Wall seconds for each (server, sql) to run at once, one client per pair."""
    from concurrent.futures import ThreadPoolExecutor

    conns = [_connect(server) for server, _ in pairs]
    try:
        with ThreadPoolExecutor(len(pairs)) as threads:
            began = time.perf_counter()
            list(
                threads.map(lambda cs: _simple(cs[0], cs[1]), zip(conns, [s for _, s in pairs], strict=True))
            )
            return time.perf_counter() - began
    finally:
        for conn in conns:
            conn.close()


def logged_calls(conn, model: str, after_id: int) -> int:
    rows = _simple(
        conn,
        f"SELECT coalesce(sum((model_calls->>'{model}_score')::bigint), 0) FROM sieve.query_log "
        f"WHERE query_id > {after_id}",
    )
    return int(rows[0][0])


def last_query_id(conn) -> int:
    return int(_simple(conn, "SELECT coalesce(max(query_id), 0) FROM sieve.query_log")[0][0])


def warm_models(servers: list[Frontend], first_id: int) -> None:
    """Start each front-end's worker and load each model on rows no timed scan reads."""
    for server in servers:
        with _connect(server) as conn:
            for model in ("light", "heavy"):
                _simple(conn, scan_sql(model, first_id, first_id + 32))


def cold_scan_costs(fig: FrontendFigures, a: Frontend, pg: tuple[int, str], conn, model: str, n: int) -> None:
    """One cold scan of n rows through one front-end: its rows/s and each process's CPU per row."""
    pg_pid, pg_dsn = pg
    _simple(conn, f"SELECT sieve.clear_cache('{model}_score')")
    cpu = (proc_cpu_seconds(a.pid), children_cpu_seconds(a.pid), tree_cpu_seconds(pg_pid))
    began = time.perf_counter()
    with ClaimWaits(pg_dsn) as waits:
        _simple(conn, scan_sql(model, 0, n))
    wall = time.perf_counter() - began
    fig.claim_wait_1fe[model] = waits.share
    fig.cpu_s_per_row[model] = (proc_cpu_seconds(a.pid) - cpu[0] - fig.cpu_s_planned) / n
    fig.worker_cpu_s_per_row[model] = (children_cpu_seconds(a.pid) - cpu[1]) / n
    fig.pg_cpu_s_per_row[model] = (tree_cpu_seconds(pg_pid) - cpu[2]) / n
    fig.rows_per_s_1fe[model] = n / wall


def measure_frontends(
    servers: list[Frontend], pg: tuple[int, str], rows: dict[str, int], statements: int
) -> FrontendFigures:
    """Front-end CPU per statement and per row, cold-scan rows/s through one and two front-ends,
    and the duplicate-work factor; ``pg`` is the backing Postgres's (postmaster pid, DSN)."""
    fig = FrontendFigures()
    a, b = servers
    warm_models(servers, max(rows.values()))
    with _connect(a) as conn:
        fig.cpu_s_forwarded = cpu_per_statement(a, conn, "SELECT 1", statements)
        _simple(conn, scan_sql("light", 0, 100))  # materialize the 100 rows the planned statement reads
        fig.cpu_s_planned = cpu_per_statement(a, conn, scan_sql("light", 0, 100), statements)
        for model, n in rows.items():
            cold_scan_costs(fig, a, pg, conn, model, n)
            _simple(conn, f"SELECT sieve.clear_cache('{model}_score')")
            half = n // 2
            with ClaimWaits(pg[1]) as waits:
                wall = timed_scans([(a, scan_sql(model, 0, half)), (b, scan_sql(model, half, 2 * half))])
            fig.claim_wait_2fe[model] = waits.share
            fig.rows_per_s_2fe[model] = 2 * half / wall
        # The control: the same two halves, but each front-end on a model of its own.
        n, half = rows["light"], rows["light"] // 2
        _simple(conn, "SELECT sieve.clear_cache('light_score')")
        with ClaimWaits(pg[1]) as waits:
            wall = timed_scans([(a, scan_sql("light", 0, half)), (b, scan_sql("light_twin", half, 2 * half))])
        fig.claim_wait_2fe_two_models = waits.share
        fig.rows_per_s_2fe_two_models = 2 * half / wall
        # Both front-ends on the same cold inputs at once: do they split the work?
        _simple(conn, "SELECT sieve.clear_cache('light_score')")
        first = last_query_id(conn)
        timed_scans([(a, scan_sql("light", 0, n)), (b, scan_sql("light", 0, n))])
        fig.duplicate_calls = logged_calls(conn, "light", first)
        fig.duplicate_inputs = n
        fig.duplicate_factor = fig.duplicate_calls / n
    return fig


# -- inference backends ----------------------------------------------------------------------------------


async def backend_rate(pool, ref, x: np.ndarray, callers: int, batches: int) -> float:
    """Rows/s with ``callers`` concurrent callers each sending ``batches`` batches of x."""
    await asyncio.gather(*(pool.infer(ref, {"X": x}) for _ in range(callers)))  # warm every replica

    async def caller() -> None:
        for _ in range(batches):
            await pool.infer(ref, {"X": x})

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return callers * batches * len(x) / (time.perf_counter() - began)


async def single_latency(pool, ref, x: np.ndarray, n: int) -> float:
    await pool.infer(ref, {"X": x})
    times = []
    for _ in range(n):
        began = time.perf_counter()
        await pool.infer(ref, {"X": x})
        times.append(time.perf_counter() - began)
    return statistics.median(times)


async def local_pool_figures(
    paths: dict[str, Path], x: dict[str, np.ndarray], batches: dict[str, int]
) -> dict:
    from inference import InferencePool, ModelRef

    out: dict = {}
    for workers in (1, 2):
        async with InferencePool(
            workers=workers, max_batch_rows=BATCH, intra_op_threads=1, device="cpu"
        ) as pool:
            for model, path in paths.items():
                ref = ModelRef(f"{model}@bench", path)
                out[(workers, model)] = await backend_rate(pool, ref, x[model], 2 * workers, batches[model])
                if workers == 1:
                    out[("latency", model)] = await single_latency(pool, ref, x[model], 10)
    return out


class ActorPool:
    """Round-robin over bare Ray actors, one CPU each: what a Ray actor call costs by itself (and
    the Ray rows' backend when inference.ray_pool is absent)."""

    def __init__(self, paths: dict[str, Path], replicas: int) -> None:
        import ray

        @ray.remote(num_cpus=1)
        class Replica:
            def __init__(self, model_paths: dict[str, str]) -> None:
                self.sessions = {key: one_thread_session(Path(p)) for key, p in model_paths.items()}

            def run(self, key: str, x: np.ndarray) -> np.ndarray:
                return self.sessions[key].run(None, {"X": x})[0]

            def noop(self, x: np.ndarray) -> int:
                return len(x)

        wire = {f"{m}@bench": str(p) for m, p in paths.items()}
        self.actors = [Replica.remote(wire) for _ in range(replicas)]
        ray.get([a.noop.remote(np.zeros((1, 1), np.float32)) for a in self.actors])
        self.next = 0

    async def infer(self, ref, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        actor = self.actors[self.next % len(self.actors)]
        self.next += 1
        return {"score": await actor.run.remote(ref.key, inputs["X"])}

    async def noop(self, x: np.ndarray) -> int:
        return await self.actors[0].noop.remote(x)

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)  # frees its CPU for the replicas measured next


async def actor_call_costs(paths: dict[str, Path], x: np.ndarray) -> dict:
    """A bare actor call carrying one batch: its latency as a no-op and running the light model,
    and the caller's CPU per call."""
    pool = ActorPool(paths, 1)
    try:
        out = {"noop": 0.0}
        await pool.noop(x)
        times = []
        for _ in range(30):
            began = time.perf_counter()
            await pool.noop(x)
            times.append(time.perf_counter() - began)
        out["noop"] = statistics.median(times)
        before = proc_cpu_seconds(os.getpid())
        for _ in range(30):
            await pool.noop(x)
        out["caller_cpu"] = (proc_cpu_seconds(os.getpid()) - before) / 30
        from inference import ModelRef

        out["actor_light"] = await single_latency(pool, ModelRef("light@bench", paths["light"]), x, 10)
        return out
    finally:
        pool.close()


async def grow_replicas(pool, ref, x: np.ndarray, want: int, timeout: float = 90.0) -> None:
    """Keep ``pool`` busy until it runs ``want`` replicas of ``ref`` (they follow the load)."""
    deadline = time.monotonic() + timeout
    while sum(n["replicas"] for n in pool.replicas(ref.key).values()) < want:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Ray pool did not reach {want} replicas of {ref.key}: {pool.replicas(ref.key)}"
            )
        await asyncio.gather(*(pool.infer(ref, {"X": x}) for _ in range(2 * want)))


async def ray_figures(address: str, paths, x, batches, nodes: int) -> tuple[dict, str]:
    """Rows/s per model on a Ray cluster of ``nodes`` one-CPU nodes (and, on one node, the costs of
    a bare actor call)."""
    from inference import ModelRef

    try:
        from inference.ray_pool import RayInferencePool
    except ImportError:
        RayInferencePool = None  # noqa: N806
    out: dict = await actor_call_costs(paths, x["light"]) if nodes == 1 else {}
    for model in paths:
        ref = ModelRef(f"{model}@bench", paths[model])
        if RayInferencePool is None:
            pool = ActorPool(paths, nodes)
            out[model] = await backend_rate(pool, ref, x[model], 2 * nodes, batches[model])
            if nodes == 1:
                out[("latency", model)] = await single_latency(pool, ref, x[model], 10)
            pool.close()
            continue
        # One pool per model: replicas hold a CPU each, and these nodes have one.
        async with RayInferencePool(address, max_replicas=nodes, device="cpu", max_batch_rows=BATCH) as pool:
            await grow_replicas(pool, ref, x[model], nodes)
            out[model] = await backend_rate(pool, ref, x[model], 2 * nodes, batches[model])
            if nodes == 1:
                out[("latency", model)] = await single_latency(pool, ref, x[model], 10)
    kind = "inference.ray_pool.RayInferencePool" if RayInferencePool else "the bench's actor pool"
    return out, kind


@contextlib.contextmanager
def ray_cluster(nodes: int):
    """A local Ray cluster of ``nodes`` one-CPU nodes, this process its driver; yields its address."""
    import ray
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 200 << 20}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
        try:
            yield cluster.address
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()


def ray_frontend_scan(tmp: Path, common: list[str], password: str, address: str, n: int) -> float:
    """Rows/s of a cold heavy scan through a front-end whose inference runs on the Ray cluster."""
    from tests.support.servers import SieveProcess

    args = [*common, "--ray-address", address, "--ray-max-replicas", "2"]
    server = Frontend(SieveProcess(tmp / "fe-ray" / "data", extra_args=args).start(), password)
    try:
        with _connect(server) as conn:
            _simple(conn, scan_sql("heavy", n, n + WARM_ROWS))  # replicas start, and grow with the load
            _simple(conn, "SELECT sieve.clear_cache('heavy_score')")
            began = time.perf_counter()
            _simple(conn, scan_sql("heavy", 0, n))
            return n / (time.perf_counter() - began)
    finally:
        server.proc.stop()


# -- the simulation against what was measured ----------------------------------------------------------


def backend_costs(m: dict, model: str, backend: str) -> sim.Costs:
    """The backend alone (no statements, front-end rows or writes): bare model time per row, and
    per batch what the backend's single-batch latency adds to the bare run."""
    bare = m["bare_s_per_batch"][model]
    latency = m["pool"]["latency", model] if backend == "pool" else m["ray"][1]["latency", model]
    return sim.Costs(
        fe_s_per_statement=0.0,
        fe_s_per_row=0.0,
        fe_s_per_batch=m["ray"][1]["caller_cpu"] if backend == "ray" else 0.0,
        model_s_per_row=bare / BATCH,
        model_s_per_batch=max(latency - bare, 0.0),
        pg_rows_per_s=float("inf"),
    )


def pg_rows_per_s(m: dict, model: str) -> float:
    """What one Postgres absorbs per materialized row: the slower of the bare cache COPY and all of
    Postgres's CPU per row in a cold scan (reading inputs, digests, claims, COPY, the answer)."""
    pg_cpu = m["frontends"].pg_cpu_s_per_row[model]
    return min(m["copy_rows_per_s"][1], 1.0 / pg_cpu if pg_cpu > 0 else float("inf"))


def scan_costs(m: dict, model: str) -> sim.Costs:
    """A cold scan through SieveDB with the local pool, each component's CPU as measured in it."""
    fe = m["frontends"]
    return sim.Costs(
        fe_s_per_statement=fe.cpu_s_planned,
        fe_s_per_row=max(fe.cpu_s_per_row[model], 0.0),
        fe_s_per_batch=0.0,
        model_s_per_row=max(fe.worker_cpu_s_per_row[model], m["bare_s_per_batch"][model] / BATCH),
        model_s_per_batch=0.0,
        pg_rows_per_s=pg_rows_per_s(m, model),
    )


def ray_scan_costs(m: dict, model: str) -> sim.Costs:
    """A cold scan through SieveDB on Ray: the scan's front-end and Postgres costs, the Ray backend's."""
    ray = backend_costs(m, model, "ray")
    return replace(
        scan_costs(m, model),
        fe_s_per_batch=ray.fe_s_per_batch,
        model_s_per_row=ray.model_s_per_row,
        model_s_per_batch=ray.model_s_per_batch,
    )


def scan_wait_s_per_row(m: dict, model: str) -> float:
    """Time per row a lone cold scan spends waiting rather than computing (round trips, claims,
    handing batches between processes): its wall time per row less every process's CPU per row.
    The simulation carries it as a delay, which overlaps across concurrent scans."""
    fe = m["frontends"]
    n = m["scan_rows"][model]
    cpu = fe.cpu_s_per_row[model] + fe.worker_cpu_s_per_row[model] + fe.pg_cpu_s_per_row[model]
    return max(0.0, 1.0 / fe.rows_per_s_1fe[model] - cpu - fe.cpu_s_planned / n)


def validation_rows(m: dict, cores: float) -> list[list[str]]:
    rows = []
    for model in ("light", "heavy"):
        for backend, name, replicas, measured in (
            ("pool", "local pool, 1 worker", 1, m["pool"][(1, model)]),
            ("pool", "local pool, 2 workers", 2, m["pool"][(2, model)]),
            ("ray", "Ray, 1 node", 1, m["ray"][1][model]),
            ("ray", "Ray, 2 nodes", 2, m["ray"][2][model]),
        ):
            work = sim.Workload(rows_per_query=BATCH, batch_rows=BATCH, clients=2 * replicas)
            cluster = sim.Cluster(frontends=1, gpus=replicas, host_cores=cores)
            p = sim.predict(backend_costs(m, model, backend), work, cluster)
            rows.append(_versus(model, name, p, p, measured))
        fe = m["frontends"]
        wait = scan_wait_s_per_row(m, model)
        for n, measured in ((1, fe.rows_per_s_1fe[model]), (2, fe.rows_per_s_2fe[model])):
            rows_each = m["scan_rows"][model] // n
            work = sim.Workload(rows_per_query=rows_each, batch_rows=BATCH, clients=n)
            cluster = sim.Cluster(frontends=n, gpus=n, host_cores=cores, claim_lanes=LANES)
            cpu_only = sim.predict(scan_costs(m, model), work, cluster)
            waits = sim.predict(scan_costs(m, model), replace(work, think_s=wait * rows_each), cluster)
            label = f"SieveDB cold scan, {n} front-end{'s' if n > 1 else ''} (1 worker each)"
            rows.append(
                _versus(model, label + (" [fits the wait]" if n == 1 else ""), cpu_only, waits, measured)
            )
    if "ray_frontend" in m:
        n = m["scan_rows"]["heavy"]
        work = sim.Workload(rows_per_query=n, batch_rows=BATCH, clients=1)
        cluster = sim.Cluster(frontends=1, gpus=2, host_cores=cores, claim_lanes=LANES)
        cpu_only = sim.predict(ray_scan_costs(m, "heavy"), work, cluster)
        waits = sim.predict(
            ray_scan_costs(m, "heavy"), replace(work, think_s=scan_wait_s_per_row(m, "heavy") * n), cluster
        )
        rows.append(
            _versus(
                "heavy", "SieveDB cold scan, 1 front-end on Ray, 2 nodes", cpu_only, waits, m["ray_frontend"]
            )
        )
    return rows


def _versus(model: str, name: str, cpu_only: sim.Prediction, p: sim.Prediction, measured: float) -> list[str]:
    return [
        model,
        name,
        f"{cpu_only.rows_per_s:,.0f}",
        f"{p.rows_per_s:,.0f}",
        f"{measured:,.0f}",
        f"{measured / p.rows_per_s:.2f}",
        p.bottleneck,
    ]


def plan_rows(costs: sim.Costs, work: sim.Workload) -> list[list[str]]:
    out = []
    for p in sim.scale_path(costs, work, sim.Cluster(frontends=1, gpus=1, claim_lanes=LANES), steps=10):
        c = p.cluster
        cells = [str(c.frontends), str(c.gpus), f"{c.pg_servers:g}", str(c.claim_lanes)]
        out.append([*cells, f"{p.rows_per_s:,.0f}", p.bottleneck, f"{max(p.utilization.values()):.2f}"])
    return out


def shift_lines(costs: sim.Costs, work: sim.Workload) -> list[str]:
    """Where adding replicas, then front-ends, stops paying, and what limits next."""
    lines = []
    for resource, what in ((sim.MODEL, "replicas"), (sim.FRONTEND, "front-ends")):
        plenty = sim.Cluster(frontends=64, gpus=64, pg_servers=64)
        units = sim.units_until_shift(costs, work, plenty, resource)
        if units is None:
            continue
        at = replace(plenty, **({"gpus": units} if resource == sim.MODEL else {"frontends": units}))
        nxt = sim.predict(costs, work, at).bottleneck
        lines.append(
            f"  {what} stop paying at about {units} (others plentiful), then {nxt}: {sim.REMEDIES[nxt]}"
        )
    return lines


def detector_rows(costs: sim.Costs, frames: float) -> list[list[str]]:
    """The issue's detector (20 ms per frame on one GPU) over ``frames`` frames: each GPU count
    with the front-ends and Postgres servers that keep the GPUs the bottleneck, with unbounded
    claims and with today's lanes."""
    detector = replace(costs, model_s_per_row=20e-3, model_s_per_batch=0.0)
    rows = []
    for gpus in (1, 10, 100, 1000):
        work = sim.Workload(rows_per_query=100_000, batch_rows=BATCH, clients=max(256, 2 * gpus))
        cluster = sim.sized_cluster(detector, work, gpus)
        free = sim.predict(detector, work, cluster)
        lanes = sim.predict(detector, work, replace(cluster, claim_lanes=LANES))
        cells = [str(gpus), str(cluster.frontends), f"{cluster.pg_servers:g}"]
        for p in (free, lanes):
            cells += [f"{p.rows_per_s:,.0f}", f"{frames / p.rows_per_s / 3600:,.1f}"]
        rows.append(cells)
    return rows


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        cells = zip(r, widths, strict=True)
        return "  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(cells))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


# -- driver ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rows, shorter runs (under ~3 minutes)")
    ap.add_argument(
        "--rows", type=int, default=None, help="rows of the light model's scans (default 40000; quick 16000)"
    )
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument(
        "--skip-ray-frontend", action="store_true", help="skip the cold scan through a front-end on Ray"
    )
    ap.add_argument("--no-netns", action="store_true", help="do not re-run inside `unshare -n` (as root)")
    ap.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    args = ap.parse_args(argv)
    if args.rows is None:
        args.rows = 16_000 if args.quick else 40_000
    return args


def reexec_in_netns(argv: list[str]) -> int:
    """Run this script again in a fresh network namespace with only loopback up."""
    script = " ".join(
        ["ip link set lo up && exec", sys.executable, str(Path(__file__).resolve()), *argv, "--in-netns"]
    )
    return subprocess.call(["unshare", "-n", "sh", "-c", script])


def measure(args: argparse.Namespace, tmp: Path) -> dict:
    from tests.support.servers import PlainPostgres, SieveProcess

    other_before = other_cores()
    paths = build_models(tmp / "models")
    seconds = 0.5 if args.quick else 1.5
    m: dict = {
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "bare_s_per_batch": {},
        "scan_rows": {"light": args.rows, "heavy": max(2 * BATCH, args.rows // 8)},
    }
    xb = {model: inputs(BATCH, seed=3) for model in paths}
    for model, path in paths.items():
        m["bare_s_per_batch"][model] = bare_s_per_batch(path, xb[model], seconds)
    log.info("models: light %.3g s/row, heavy %.3g s/row", *(m["bare_s_per_batch"][k] / BATCH for k in paths))
    # Batches per caller: about 1 s of model time for one replica.
    batches = {k: max(4, min(200, int(1.0 / max(m["bare_s_per_batch"][k], 1e-4)))) for k in paths}
    if args.quick:
        batches = {k: max(3, v // 3) for k, v in batches.items()}

    with ExitStack() as stack:
        pg = PlainPostgres(tmp / "pg").start()
        stack.callback(pg.stop)
        m["copy_rows_per_s"] = {w: asyncio.run(copy_rate(pg.dsn(), args.rows * 2, w)) for w in (1, 2)}
        log.info("COPY into a cache table: %s rows/s", m["copy_rows_per_s"])
        load_blobs(pg.dsn(), inputs(max(m["scan_rows"].values()) + WARM_ROWS, seed=5))
        pg_pid = int(next((tmp / "pg").rglob("postmaster.pid")).read_text().split()[0])
        common = ["--postgres-dsn", pg.dsn(), "--models-dir", str(tmp / "models"), "--inference-workers", "1"]
        a = Frontend(SieveProcess(tmp / "fe-a" / "data", extra_args=common).start(), pg.password)
        stack.callback(a.proc.stop)
        with _connect(a) as conn:
            create_models(conn)
        # Started after the models exist, so that it needs no catalog propagation to see them.
        b = Frontend(SieveProcess(tmp / "fe-b" / "data", extra_args=common).start(), pg.password)
        stack.callback(b.proc.stop)
        m["frontends"] = measure_frontends(
            [a, b], (pg_pid, pg.dsn()), m["scan_rows"], 100 if args.quick else 300
        )
        log.info("front-ends: %s", m["frontends"])
        m["pool"] = asyncio.run(local_pool_figures(paths, xb, batches))
        log.info("local pool: %s", m["pool"])
        m["ray"], m["ray_kind"] = {}, ""
        for nodes in (1, 2):
            with ray_cluster(nodes) as address:
                m["ray"][nodes], m["ray_kind"] = asyncio.run(ray_figures(address, paths, xb, batches, nodes))
                log.info("ray %d node(s): %s", nodes, m["ray"][nodes])
                if nodes == 2 and not args.skip_ray_frontend:
                    n = m["scan_rows"]["heavy"]
                    m["ray_frontend"] = ray_frontend_scan(tmp, common, pg.password, address, n)
                    log.info("front-end on Ray (2 nodes), heavy cold scan: %.0f rows/s", m["ray_frontend"])
    m["other_cores"] = (other_before, other_cores())
    return m


def cost_rows(m: dict) -> list[list[str]]:
    bare, fe, ray = m["bare_s_per_batch"], m["frontends"], m["ray"][1]
    us = lambda v: f"{v * 1e6:,.2f} us"  # noqa: E731
    ms = lambda v: f"{v * 1e3:,.2f} ms"  # noqa: E731
    return [
        ["model time per row, light (1 thread, batch 4096)", us(bare["light"] / BATCH)],
        ["model time per row, heavy", us(bare["heavy"] / BATCH)],
        ["heavy / light per row", f"{bare['heavy'] / bare['light']:,.0f}x"],
        ["cache COPY into Postgres, 1 writer", f"{m['copy_rows_per_s'][1]:,.0f} rows/s"],
        ["cache COPY into Postgres, 2 writers", f"{m['copy_rows_per_s'][2]:,.0f} rows/s"],
        ["front-end CPU, forwarded SELECT 1", us(fe.cpu_s_forwarded)],
        ["front-end CPU, planned statement over cached rows", us(fe.cpu_s_planned)],
        ["planner work per query (planned - forwarded)", us(fe.cpu_s_planned - fe.cpu_s_forwarded)],
        ["cold scan, light: front-end CPU per row", us(fe.cpu_s_per_row["light"])],
        ["cold scan, light: inference worker CPU per row", us(fe.worker_cpu_s_per_row["light"])],
        ["cold scan, light: Postgres CPU per row (all processes)", us(fe.pg_cpu_s_per_row["light"])],
        ["cold scan, heavy: front-end CPU per row", us(fe.cpu_s_per_row["heavy"])],
        ["cold scan, heavy: inference worker CPU per row", us(fe.worker_cpu_s_per_row["heavy"])],
        ["cold scan, heavy: Postgres CPU per row (all processes)", us(fe.pg_cpu_s_per_row["heavy"])],
        ["Ray actor call, no-op, carrying 4096x64 float32", ms(ray["noop"])],
        ["Ray actor call, caller's CPU", ms(ray["caller_cpu"])],
        ["Ray actor call running the light batch", ms(ray["actor_light"])],
        [
            "light batch: bare / local pool / Ray pool",
            " / ".join(
                ms(v) for v in (bare["light"], m["pool"]["latency", "light"], ray["latency", "light"])
            ),
        ],
        [
            "heavy batch: bare / local pool / Ray pool",
            " / ".join(
                ms(v) for v in (bare["heavy"], m["pool"]["latency", "heavy"], ray["latency", "heavy"])
            ),
        ],
        [
            "share of time a batch waited for a claim, light: 1 / 2 front-ends",
            f"{fe.claim_wait_1fe['light']:.2f} / {fe.claim_wait_2fe['light']:.2f}",
        ],
        [
            "share of time a batch waited for a claim, light and its twin on 2 front-ends",
            f"{fe.claim_wait_2fe_two_models:.2f}",
        ],
        [
            "share of time a batch waited for a claim, heavy: 1 / 2 front-ends",
            f"{fe.claim_wait_1fe['heavy']:.2f} / {fe.claim_wait_2fe['heavy']:.2f}",
        ],
        [
            "two front-ends, same cold query: model calls / distinct inputs",
            f"{fe.duplicate_factor:.2f} ({fe.duplicate_calls:,} / {fe.duplicate_inputs:,})",
        ],
    ]


def rate_rows(m: dict) -> list[list[str]]:
    fe, rows = m["frontends"], []
    for model in ("light", "heavy"):
        base = m["pool"][(1, model)]
        named = [
            ("local pool, 1 worker", base),
            ("local pool, 2 workers", m["pool"][(2, model)]),
            ("Ray, 1 node (1 CPU)", m["ray"][1][model]),
            ("Ray, 2 nodes (1 CPU each)", m["ray"][2][model]),
            ("SieveDB cold scan, 1 front-end", fe.rows_per_s_1fe[model]),
            ("SieveDB cold scan, 2 front-ends", fe.rows_per_s_2fe[model]),
        ]
        if model == "light":
            named.append(("SieveDB cold scan, 2 front-ends, a model each", fe.rows_per_s_2fe_two_models))
        if model == "heavy" and "ray_frontend" in m:
            named.append(("SieveDB cold scan, 1 front-end on Ray, 2 nodes", m["ray_frontend"]))
        rows += [[model, name, f"{rate:,.0f}", f"{rate / base:.2f}"] for name, rate in named]
    return rows


def report(m: dict, cores: float) -> str:
    # Other processes' load is reported, not subtracted: while the benchmark runs the scheduler
    # shares the cores among everyone runnable, so what others took while it idled overstates it.
    head = f"bench_scale: everything on this one host, {cores:g} cores; load average {m['load']}; "
    head += "other processes kept {:.2f} / {:.2f} cores busy before / after".format(*m["other_cores"])
    out = [head, ""]
    out.append(table(["cost", "value"], cost_rows(m)))
    out += [
        "",
        f"rows/s, and the ratio to the local pool with 1 worker in this run (Ray pool: {m['ray_kind']})",
    ]
    out.append(table(["model", "backend", "rows/s", "x pool(1)"], rate_rows(m)))
    out += ["", f"simulation (bench/scale_sim.py, host_cores {cores:g}) against what was measured"]
    headers = [
        "model",
        "configuration",
        "pred. (CPU only)",
        "predicted",
        "measured",
        "meas/pred",
        "bottleneck",
    ]
    out.append(table(headers, validation_rows(m, cores)))
    work = sim.Workload(rows_per_query=100_000, batch_rows=BATCH, clients=256)
    for model in ("light", "heavy"):
        costs = ray_scan_costs(m, model)
        out += [
            "",
            f"plan, {model} model on Ray, components on own hosts (100k cold rows a query, 256 at once)",
        ]
        out.append(
            table(
                ["front-ends", "GPUs", "Postgres", "claim lanes", "rows/s", "bottleneck", "utilization"],
                plan_rows(costs, work),
            )
        )
        out += shift_lines(costs, work)
    out += ["", "the issue's detector (20 ms/frame on one GPU), 10^8 frames, other costs as measured"]
    headers = ["GPUs", "front-ends", "Postgres", "frames/s", "hours", f"frames/s, {LANES} lanes", "hours"]
    out.append(table(headers, detector_rows(ray_scan_costs(m, "heavy"), 1e8)))
    return "\n".join(out)


def to_json(m: dict) -> dict:
    def key(k) -> str:
        return "/".join(map(str, k)) if isinstance(k, tuple) else str(k)

    def clean(v):
        if isinstance(v, dict):
            return {key(k): clean(x) for k, x in v.items()}
        if isinstance(v, FrontendFigures):
            return asdict(v)
        return v

    return clean(m)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if os.geteuid() == 0 and not (args.no_netns or args.in_netns) and shutil.which("unshare"):
        return reexec_in_netns(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale-"))
    began = time.perf_counter()
    try:
        m = measure(args, tmp)
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    cores = float(len(os.sched_getaffinity(0)))
    print(report(m, cores))
    print(f"\n({time.perf_counter() - began:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(m), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
