"""Joining a Ray cluster as a driver, and what its resources allow (blocking: call from a thread)."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import ray

from inference.errors import InferenceLayerError

log = logging.getLogger("sievedb.inference.ray")


class RayClusterError(InferenceLayerError):
    """The Ray cluster cannot be reached, or was left."""


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    nodes: int
    cpus: float
    gpus: float

    def default_max_replicas(self, gpu: bool) -> int:
        """Replicas of one model: one per GPU for a GPU model, else one per two CPUs; at least 1."""
        if gpu and self.gpus >= 1:
            return int(self.gpus)
        return max(1, int(self.cpus // 2))


def connect(address: str) -> tuple[ClusterInfo, bool]:
    """``ray.init(address)`` unless this process is connected already (then the address is not
    used); the cluster's size, and whether this call joined (so the caller leaves it too)."""
    joined = False
    try:
        if not ray.is_initialized():
            _probe(address)
            # The workers' stdout would otherwise interleave with the server's log.
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            joined = True
        return describe(address), joined
    except Exception as exc:
        raise RayClusterError(f"cannot join the Ray cluster at {address!r}: {exc}") from exc


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast when a ``host:port`` address does not answer: ``ray.init`` waits for such a
    head for minutes (measured: still waiting after 120 s)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # "auto", "ray://...": Ray resolves those itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayClusterError(f"nothing answers there ({exc})") from exc


def describe(address: str) -> ClusterInfo:
    resources = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    info = ClusterInfo(address, nodes, resources.get("CPU", 0.0), resources.get("GPU", 0.0))
    log.info("Ray cluster at %s: %d node(s), %g CPU, %g GPU", address, info.nodes, info.cpus, info.gpus)
    return info


def disconnect() -> None:
    if ray.is_initialized():
        ray.shutdown()
