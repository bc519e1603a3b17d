"""RayInferencePool against a local two-node Ray cluster; prints one JSON object of findings.

Run by tests/ray/test_ray_pool.py inside a loopback-only network namespace:
``python -m tests.ray.scenario_pool``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from inference.errors import PoolClosedError, WorkerCrashedError
from inference.model import ModelRef
from inference.ray_fleet import actor_name
from inference.ray_pool import RayInferencePool
from tests.inference import models
from tests.ray.cluster import add_worker, local_cluster
from tests.support.model_files import direct_run


async def until(predicate, timeout: float = 60.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(step)


def ready_replicas(pool: RayInferencePool, key: str) -> int:
    return sum(node["replicas"] for node in pool.replicas(key).values())


def busy_replica(pool: RayInferencePool):
    return next((w for w in pool.workers() if w.in_flight), None)


async def batching(pool: RayInferencePool, mlp: Path, x: np.ndarray) -> dict:
    """Eight callers at once, 50 rows each: one model, so their rows share batches."""
    ref = ModelRef("mlp@batching", str(mlp))
    parts = [x[i * 50 : (i + 1) * 50] for i in range(8)]
    outs = await asyncio.gather(*(pool.infer(ref, {"X": p}) for p in parts))
    label, prob = direct_run(mlp, {"X": x[:400]}).values()
    stats = pool.stats(ref.key)
    return {
        "labels_equal": bool(np.array_equal(np.concatenate([o["label"] for o in outs]), label)),
        "probabilities_close": bool(
            np.allclose(np.concatenate([o["probabilities"] for o in outs]), prob, atol=1e-6)
        ),
        "requests": stats.requests,
        "batches": stats.batches,
        "max_batch_rows": stats.max_batch_rows,
        "devices": sorted(stats.rows_by_device),
        "replicas": pool.replicas(ref.key),
    }


async def killed_mid_batch(pool: RayInferencePool, slow: Path, x: np.ndarray) -> dict:
    """ray.kill the replica while it runs a batch: the batch runs again on a new replica."""
    ref = ModelRef("slow@kill", str(slow))
    await pool.infer(ref, {"X": x[:8]})  # a ready replica with its session loaded
    task = asyncio.ensure_future(pool.infer(ref, {"X": x}))
    await until(lambda: busy_replica(pool) is not None)
    await asyncio.sleep(0.3)  # inside session.run by now
    victim = busy_replica(pool)
    ray.kill(ray.get_actor(actor_name(ref.key, victim.worker_id)), no_restart=True)
    out = await task
    expected = direct_run(slow, {"X": x})["label"]
    stats = pool.stats(ref.key)
    ready = [w for w in pool.workers() if w.state == "ready"]
    return {
        "labels_equal": bool(np.array_equal(out["label"], expected)),
        "rows": int(len(out["label"])),
        "crashes": stats.crashes,
        "victim": victim.worker_id,
        "ready_serials": [w.worker_id for w in ready],
        "model_replicas": ready_replicas(pool, ref.key),
    }


async def growth(pool: RayInferencePool, slow: Path, x: np.ndarray) -> dict:
    """Eight batches at once for one model: replicas grow to max_replicas, then idle back to one."""
    ref = ModelRef("slow@grow", str(slow))
    seen: list[int] = []
    task = asyncio.ensure_future(
        asyncio.gather(*(pool.infer(ref, {"X": x[i * 1024 : (i + 1) * 1024]}) for i in range(8)))
    )
    while not task.done():
        seen.append(ready_replicas(pool, ref.key))
        await asyncio.sleep(0.02)
    outs = task.result()
    expected = direct_run(slow, {"X": x[:8192]})["label"]
    grown = max(seen)
    await until(lambda: ready_replicas(pool, ref.key) == 1, timeout=30)  # idle: back to one
    return {
        "labels_equal": bool(np.array_equal(np.concatenate([o["label"] for o in outs]), expected)),
        "most_replicas": grown,
        "max_replicas": pool.max_replicas,
        "batches": pool.stats(ref.key).batches,
        "nodes": pool.replicas(ref.key),
    }


async def attempts_run_out(address: str, slow: Path, x: np.ndarray) -> dict:
    """With one attempt allowed, a killed replica fails the request (naming the model); the
    next request runs on the replacement."""
    pool = RayInferencePool(address, max_replicas=1, max_attempts=1)
    await pool.start()
    ref = ModelRef("slow@once", str(slow))
    try:
        await pool.infer(ref, {"X": x[:8]})
        task = asyncio.ensure_future(pool.infer(ref, {"X": x}))
        await until(lambda: busy_replica(pool) is not None)
        await asyncio.sleep(0.3)
        ray.kill(ray.get_actor(actor_name(ref.key, busy_replica(pool).worker_id)), no_restart=True)
        try:
            await task
            error = None
        except WorkerCrashedError as exc:
            error = str(exc)
        after = await pool.infer(ref, {"X": x[:16]})
        again = bool(np.array_equal(after["label"], direct_run(slow, {"X": x[:16]})["label"]))
        queued = pool.queued_requests
        # Closing without draining fails the batch in flight rather than leaving its caller waiting.
        task = asyncio.ensure_future(pool.infer(ref, {"X": x}))
        await until(lambda: busy_replica(pool) is not None)
        await asyncio.wait_for(pool.close(drain=False), 30)
        try:
            await asyncio.wait_for(task, 10)
            closed = None
        except PoolClosedError as exc:
            closed = str(exc)
        return {"error": error, "next_request_ok": again, "queued": queued, "closed_in_flight": closed}
    finally:
        await pool.close()


async def gpu_placement(cluster, mlp: Path, x: np.ndarray) -> dict:
    """A node that declares a GPU joins: a model's replica asks for it (and, the GPU being only
    declared, its ONNX Runtime falls back to CPU); a model pinned to the CPU asks for a CPU only."""
    gpu_node = add_worker(cluster, cpus=1, gpus=1)
    await until(lambda: ray.cluster_resources().get("GPU", 0) == 1, timeout=30)
    pool = RayInferencePool(cluster.address)
    await pool.start()
    try:
        gpu_ref = ModelRef("mlp@gpu", str(mlp))
        cpu_ref = ModelRef("mlp@cpu", str(mlp), session_options={"device": "cpu"})
        outs = [await pool.infer(ref, {"X": x[:20]}) for ref in (gpu_ref, cpu_ref)]
        return {
            "gpus": pool.cluster.gpus,
            "gpu_node": gpu_node.node_id[:8],
            "gpu_model_nodes": [n.split("/")[1] for n in pool.replicas(gpu_ref.key)],
            "cpu_model_nodes": [n.split("/")[1] for n in pool.replicas(cpu_ref.key)],
            "devices": sorted({w.device for w in pool.workers()}),
            "labels_equal": all(np.array_equal(o["label"], outs[0]["label"]) for o in outs),
        }
    finally:
        await pool.close()


async def on_cluster(cluster, out: Path) -> dict:
    digits = models.load_digits_data()
    _, mlp = models.digits_mlp(digits, out)
    slow = models.wide_mlp(out, width=4096)  # about 1 s for 4096 rows on one core
    x = np.random.default_rng(0).standard_normal((4096, 64)).astype(np.float32)
    add_worker(cluster, cpus=2)
    ray.init(address=cluster.address, log_to_driver=False)  # the pool shares this connection
    pool = RayInferencePool(cluster.address, max_replicas=2, max_wait_ms=50)
    await pool.start()
    try:
        found = {"cluster": {"nodes": pool.cluster.nodes, "cpus": pool.cluster.cpus}}
        found["batching"] = await batching(pool, mlp, digits.x)
        found["kill"] = await killed_mid_batch(pool, slow, x)
    finally:
        await pool.close()
    # Batches of 1024 rows: eight requests make eight batches, more than one replica holds.
    pool = RayInferencePool(cluster.address, max_replicas=2, max_batch_rows=1024, idle_release_s=1.0)
    await pool.start()
    try:
        found["growth"] = await growth(pool, slow, np.concatenate([x, x]))
    finally:
        await pool.close()
    found["attempts"] = await attempts_run_out(cluster.address, slow, x)
    found["gpu"] = await gpu_placement(cluster, mlp, digits.x)
    found["connected_after_close"] = ray.is_initialized()  # the pool did not join: it must not leave
    ray.shutdown()
    return found


def main() -> dict:
    out = Path(tempfile.mkdtemp(prefix="ray-pool-"))
    try:
        with local_cluster() as cluster:
            return asyncio.run(on_cluster(cluster, out))
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(main()), flush=True)
