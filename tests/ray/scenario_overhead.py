"""What a batch costs on Ray next to the local pool, same models, same run (not a test: it prints
figures, and nothing asserts times). Inside the loopback-only namespace, as root::

    unshare -n -- sh -c 'ip link set lo up && exec .venv/bin/python -m tests.ray.scenario_overhead'

Per pool: the median and 90th percentile time of 200 sequential 64-row requests (the fixed cost
of a batch), and rows/s over 100,000 rows sent at once in 4096-row requests. Light: the digits
MLP (64 -> 64 -> 10); heavy: 64 -> 1024 -> 1024 -> 10. One local worker; one Ray worker node of
one CPU (so one replica, one ONNX Runtime thread; the local worker takes all cores' threads)
beside a head that runs no replica.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from inference.model import ModelRef
from inference.pool import InferencePool
from inference.ray_pool import RayInferencePool
from tests.inference import models
from tests.ray.cluster import add_worker, local_cluster


async def measure(pool, ref: ModelRef, x: np.ndarray) -> dict:
    await pool.infer(ref, {"X": x[:64]})  # the replica or worker has the session loaded
    latencies = []
    for _ in range(200):
        started = time.perf_counter()
        await pool.infer(ref, {"X": x[:64]})
        latencies.append(time.perf_counter() - started)
    rows = np.resize(x, (100_000, x.shape[1]))
    started = time.perf_counter()
    await asyncio.gather(*(pool.infer(ref, {"X": rows[i : i + 4096]}) for i in range(0, len(rows), 4096)))
    return {
        "median_ms_64_rows": round(1000 * statistics.median(latencies), 2),
        "p90_ms_64_rows": round(1000 * sorted(latencies)[179], 2),
        "rows_per_s": round(len(rows) / (time.perf_counter() - started)),
    }


async def both_pools(address: str, light: ModelRef, heavy: ModelRef, x: np.ndarray) -> dict:
    found = {}
    for name, pool in (
        ("local", InferencePool(workers=1)),
        ("ray", RayInferencePool(address, max_replicas=1)),
    ):
        await pool.start()
        try:
            found[name] = {"light": await measure(pool, light, x), "heavy": await measure(pool, heavy, x)}
        finally:
            await pool.close()
    return found


def main() -> dict:
    out = Path(tempfile.mkdtemp(prefix="ray-overhead-"))
    try:
        digits = models.load_digits_data()
        light = ModelRef("light@1", str(models.digits_mlp(digits, out)[1]))
        heavy = ModelRef("heavy@1", str(models.wide_mlp(out, width=1024)))
        with local_cluster() as cluster:
            add_worker(cluster, cpus=1)
            return asyncio.run(both_pools(cluster.address, light, heavy, digits.x))
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":  # the local pool's workers are spawned: they import this module again
    print(json.dumps(main()), flush=True)
