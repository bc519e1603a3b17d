"""SieveDB with ``--ray-address`` over an embedded Postgres and a local Ray cluster; prints one
JSON object of findings. Run by tests/ray/test_ray_server.py inside a loopback-only network
namespace: ``python -m tests.ray.scenario_server``.

1. A model query over 100,000 rows on Ray, then on the local pool (the same server restarted
   without the address, the model's cache cleared): the answers are compared.
2. A heavier model over the same rows; once its first batch is cached, the worker node is killed
   (its replica with it) and another joins: the query must still answer right, with each input
   run and cached once, and the model's replica back, on the new node.
3. The heavy query again, on the replacement, as roles that are no superuser: without SELECT on
   the table it is refused (42501) before any model runs; with it, the same answer.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
from onnx import TensorProto, helper

from tests.inference.models import OPSET, relu_layers, save
from tests.ray.cluster import add_worker, local_cluster
from tests.support.model_files import cache_table, direct_run
from tests.support.servers import SieveProcess

ROWS = 100_000


def mlp_file(path: Path, widths: list[int], seed: int) -> Path:
    """x [N, 4] -> ReLU layers of ``widths`` -> 3 logits -> label (argmax)."""
    rng = np.random.default_rng(seed)
    inits, nodes, prev = relu_layers([4, *widths, 3], rng, first="x", bias_scale=0.1)
    nodes.append(helper.make_node("ArgMax", [prev], ["label"], axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])],
        inits,
    )
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def setup(conn: psycopg.Connection) -> None:
    conn.execute(
        "CREATE TABLE pts (id int PRIMARY KEY, x real[]);"
        "INSERT INTO pts SELECT i, ARRAY[sin(i), cos(i * 0.7), sin(i * 1.3) * 2, cos(i * 0.11)]::real[]"
        f" FROM generate_series(1, {ROWS}) i"
    )
    for name in ("cls", "heavy"):
        conn.execute(
            f"CREATE FUNCTION {name}(x real[]) RETURNS bigint LANGUAGE onnx AS '{name}.onnx', "
            """'{"output": "label"}'"""
        )


def answer(conn: psycopg.Connection, model: str) -> tuple[list[int], dict]:
    """The model's label per row in id order, and what the query log says of the query."""
    sql = f"SELECT {model}(x) FROM pts ORDER BY id"
    labels = [r[0] for r in conn.execute(sql).fetchall()]
    calls, hits = conn.execute(
        "SELECT model_calls, cache_hits FROM sieve.query_log WHERE query = %s ORDER BY query_id DESC LIMIT 1",
        (sql,),
    ).fetchone()
    return labels, {"model_calls": calls, "cache_hits": hits}


def replicas(conn: psycopg.Connection, model: str) -> dict:
    return conn.execute("SELECT replicas FROM sieve.models WHERE name = %s", (model,)).fetchone()[0]


def timed(fn, *args):
    started = time.monotonic()
    result = fn(*args)
    return result, round(time.monotonic() - started, 2)


def kill_mid_query(server: SieveProcess, cluster, first_node, expected: np.ndarray) -> dict:
    """Run the heavy query; when its first batches are cached, replace the worker node."""
    result: dict = {}

    def query() -> None:
        try:
            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                result["labels"], result["log"] = answer(conn, "heavy")
        except Exception as exc:  # reported, not raised: the scenario's JSON says what happened
            result["error"] = f"{type(exc).__name__}: {exc}"

    runner = threading.Thread(target=query)
    with psycopg.connect(server.dsn(), autocommit=True) as watch:
        table = cache_table(watch, "heavy")
        runner.start()
        cached = 0
        while runner.is_alive() and cached == 0:
            time.sleep(0.05)
            cached = watch.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        cluster.remove_node(first_node, allow_graceful=False)
        killed_while_running = runner.is_alive()
        add_worker(cluster, cpus=1)  # as an autoscaler would, once the node is gone
        result["removed_at"] = time.monotonic()
        runner.join(timeout=120)
        found_s = round(time.monotonic() - result["removed_at"], 2)
        rows, distinct = watch.execute(f"SELECT count(*), count(DISTINCT digest) FROM {table}").fetchone()
        found = {
            "cached_before_kill": cached,
            "query_seconds_after_kill": found_s,
            "killed_while_running": killed_while_running,
            "error": result.get("error"),
            "labels_equal": "labels" in result and bool(np.array_equal(result["labels"], expected)),
            "log": result.get("log"),
            "cache_rows": rows,
            "cache_distinct": distinct,
            "replicas": replicas(watch, "heavy"),
        }
    # Again, on the replacement, as roles that are no superuser: one lacking SELECT on the table
    # is refused before any model runs; one granted it gets the same answer.
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("SELECT sieve.clear_cache('heavy')")
        conn.execute("CREATE ROLE analyst LOGIN; CREATE ROLE outsider LOGIN; GRANT SELECT ON pts TO analyst")
        conn.execute("GRANT EXECUTE ON FUNCTION heavy(real[]) TO analyst, outsider")
    with psycopg.connect(server.dsn(user="outsider"), autocommit=True) as conn:
        try:
            conn.execute("SELECT heavy(x) FROM pts ORDER BY id")
            denied = None
        except psycopg.Error as exc:
            denied = exc.sqlstate
    with psycopg.connect(server.dsn(user="analyst"), autocommit=True) as conn:
        (labels, log), after_s = timed(answer, conn, "heavy")
        found["after_seconds"] = after_s
        found["after"] = {"labels_equal": bool(np.array_equal(labels, expected)), "log": log}
        found["after"]["replicas"] = replicas(conn, "heavy")
    found["after"]["outsider_sqlstate"] = denied
    return found


def main() -> dict:
    root = Path(tempfile.mkdtemp(prefix="ray-server-"))
    os.chmod(root, 0o755)  # the embedded Postgres runs as another user under root
    try:
        return on_disk(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def on_disk(root: Path) -> dict:
    models_dir = root / "models"
    models_dir.mkdir()
    mlp_file(models_dir / "cls.onnx", [16], seed=1)
    mlp_file(models_dir / "heavy.onnx", [1024, 1024], seed=2)
    found: dict = {}
    data = root / "data"
    common = ["--models-dir", str(models_dir)]
    with local_cluster() as cluster:
        first = add_worker(cluster, cpus=1)
        server = SieveProcess(data, extra_args=[*common, "--ray-address", cluster.address]).start()
        try:
            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                setup(conn)
                x = np.array([r[0] for r in conn.execute("SELECT x FROM pts ORDER BY id")], dtype=np.float32)
                (ray_labels, ray_log), found["ray_seconds"] = timed(answer, conn, "cls")
                found["ray"] = {"log": ray_log, "replicas": replicas(conn, "cls")}
            heavy = direct_run(models_dir / "heavy.onnx", {"x": x})["label"]
            found["kill"], found["kill_seconds"] = timed(kill_mid_query, server, cluster, first, heavy)
        finally:
            found["ray_server_exit"] = server.stop()
            found["replica_loss_logged"] = "lost: " in server.log()
    server = SieveProcess(data, extra_args=common, env={"RAY_ADDRESS": ""}).start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("SELECT sieve.clear_cache('cls')")
            (local_labels, local_log), found["local_seconds"] = timed(answer, conn, "cls")
            found["local"] = {"log": local_log, "replicas": replicas(conn, "cls")}
    finally:
        server.stop()
    found["rows"] = len(ray_labels)
    found["ray_equals_local"] = ray_labels == local_labels
    expected = direct_run(models_dir / "cls.onnx", {"x": x})["label"]
    found["ray_equals_onnxruntime"] = bool(np.array_equal(ray_labels, expected))
    found["label_counts"] = np.bincount(np.asarray(ray_labels), minlength=3).tolist()
    return found


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(main()), flush=True)
