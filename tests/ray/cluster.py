"""A small local Ray cluster for the scenarios (run inside the loopback-only namespace)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from ray.cluster_utils import Cluster

STORE_BYTES = 96 << 20  # each node's object store: small, the batches are too

# A lost node is noticed in about a second instead of Ray's default half minute.
FAST_FAILURE_DETECTION = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 250,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}


@contextmanager
def local_cluster(head_cpus: float = 0) -> Iterator[Cluster]:
    """A head node that runs no replica (``head_cpus=0``, as on a real cluster); add workers.
    Its processes stop, and its session files go, however the scenario ends."""
    temp = tempfile.mkdtemp(prefix="ray-")
    # Ray still notes the head's address in <tmp>/ray/ray_current_cluster, wherever its sessions live.
    os.makedirs(os.path.join(tempfile.gettempdir(), "ray"), exist_ok=True)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": head_cpus,
            "object_store_memory": STORE_BYTES,
            "include_dashboard": False,
            "_system_config": FAST_FAILURE_DETECTION,
            "temp_dir": temp,
        },
    )
    try:
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def add_worker(cluster: Cluster, cpus: float = 1, gpus: float = 0):
    return cluster.add_node(num_cpus=cpus, num_gpus=gpus, object_store_memory=STORE_BYTES)
