"""The Ray actors of one model: starting, placing, picking, replacing and retiring replicas.

Replicas are spread over the cluster's nodes (a lost node then takes only its share), each asks
for one GPU when the model runs on CUDA and the cluster has GPUs, else one CPU, and Ray restarts
none of them by itself: the pool decides what to retry and when to start a replacement.

How many: one to begin with; one more while the model's oldest queued request has waited longer
than ``grow_after_s`` with every ready replica full, up to ``max_replicas``, never two starting at
once; a ready replica idle for ``idle_release_s`` is retired while others remain, and the last
one too, after a shorter idle, when another model's new replica waits for room on the cluster.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from inference.batcher import Batch, ModelQueue
from inference.model import ModelRef
from inference.ray_replica import ModelReplica

log = logging.getLogger("sievedb.inference.ray")

_RemoteReplica = ray.remote(ModelReplica)
_serials = itertools.count(1)


def actor_name(model_key: str, serial: int) -> str:
    """The Ray name of a replica (``ray list actors`` shows it; ``ray.get_actor`` finds it). Names
    live in the driver's own namespace, so front-ends sharing a cluster never collide."""
    return f"sievedb-replica-{model_key}-{serial}"


@dataclass(eq=False)
class Replica:
    actor: Any  # ray.actor.ActorHandle
    serial: int
    state: str = "starting"  # starting | ready | dead | retired
    info: dict[str, Any] = field(default_factory=dict)
    in_flight: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    created_at: float = field(default_factory=time.monotonic)

    @property
    def node(self) -> str:
        """The node as sieve.models names it: its address and the start of its Ray id (nodes of
        one machine share the address)."""
        return f"{self.info.get('node_ip', '?')}/{self.info.get('node_id', '')[:8]}"

    @property
    def device(self) -> str:
        """The stats device, e.g. ``ray:10.0.0.5:cuda:0``."""
        return f"ray:{self.info.get('node_ip', '?')}:{self.info.get('device', '?')}"


@dataclass(eq=False)
class Job:
    """A batch on its way through Ray; its inputs are packed (and, when large, put in the object
    store) once, for every try."""

    batch: Batch
    payload: Any = None  # the packed inputs: an array sent inside the call, or the ObjectRef of one
    headers: list[dict[str, Any]] | None = None
    attempts: int = 0
    waiting_since: float = field(default_factory=time.monotonic)


class ModelFleet:
    """The replicas of one model (one ``ModelRef.ident``) and the requests waiting for them."""

    def __init__(
        self, model: ModelRef, *, gpu: bool, device: str, depth: int, max_replicas: int, on_change: Callable
    ) -> None:
        self.model = model
        self.queue = ModelQueue(model)
        self.retry: deque[Job] = deque()  # batches whose replica was lost, first in line
        self.replicas: list[Replica] = []
        self.gpu, self.device, self.depth, self.max_replicas = gpu, device, depth, max_replicas
        self.start_failures = 0
        self.last_start_error = ""
        self._on_change = on_change
        self._tasks: set[asyncio.Task] = set()

    # -- which replica ----------------------------------------------------------------------------

    def pick(self) -> Replica | None:
        """The least loaded ready replica with room for another batch."""
        free = [r for r in self.replicas if r.state == "ready" and r.in_flight < self.depth]
        return min(free, key=lambda r: r.in_flight) if free else None

    @property
    def last_used(self) -> float:
        """When a replica of this model last finished its work (or started)."""
        return max((r.idle_since for r in self.replicas), default=0.0)

    def ready_count(self) -> int:
        return sum(1 for r in self.replicas if r.state == "ready")

    def live_count(self) -> int:
        return sum(1 for r in self.replicas if r.state in ("starting", "ready"))

    def busy(self) -> bool:
        return bool(self.queue.pending or self.retry or self.queue.running)

    # -- sizing -----------------------------------------------------------------------------------

    def resize(self, now: float, grow_after_s: float, idle_release_s: float) -> None:
        if self._wants_another(now, grow_after_s):
            self.start_one()
        if self.ready_count() > 1:
            idle = [r for r in self.replicas if r.state == "ready" and not r.in_flight]
            for replica in idle[: self.ready_count() - 1]:
                if now - replica.idle_since >= idle_release_s:
                    self.retire(replica)

    def waiting_for_room(self, now: float, after_s: float) -> bool:
        """Work waits on a replica that Ray has not placed for ``after_s``: the cluster is full."""
        return self.busy() and any(
            r.state == "starting" and now - r.created_at >= after_s for r in self.replicas
        )

    def release_last(self, now: float, idle_s: float) -> bool:
        """Retire this model's only replica when it has idled ``idle_s`` (another model needs the
        room); whether it did."""
        ready = [r for r in self.replicas if r.state == "ready"]
        if self.busy() or len(ready) != 1 or ready[0].in_flight or now - ready[0].idle_since < idle_s:
            return False
        self.retire(ready[0])
        return True

    def _wants_another(self, now: float, grow_after_s: float) -> bool:
        if self.live_count() == 0:
            return self.busy()  # work is waiting and nothing will run it
        starting = any(r.state == "starting" for r in self.replicas)
        return not starting and self.live_count() < self.max_replicas and self._starved(now, grow_after_s)

    def _starved(self, now: float, grow_after_s: float) -> bool:
        return self.pick() is None and self.oldest_wait(now) >= grow_after_s

    def oldest_wait(self, now: float) -> float:
        """How long the oldest batch or request of this model has waited for a replica."""
        oldest = min(
            [r.enqueued_at for r in self.queue.pending] + [j.waiting_since for j in self.retry], default=now
        )
        return now - oldest

    # -- lifecycle --------------------------------------------------------------------------------

    def start_one(self) -> Replica:
        resources = {"num_gpus": 1, "num_cpus": 1} if self.gpu else {"num_cpus": 1}
        serial = next(_serials)
        actor = _RemoteReplica.options(
            **resources,
            name=actor_name(self.model.key, serial),
            scheduling_strategy="SPREAD",
            max_restarts=0,
            max_task_retries=0,
        ).remote(self.model.ident, self.model.wire, self.device, self.gpu)
        replica = Replica(actor, serial)
        self.replicas.append(replica)
        task = asyncio.ensure_future(self._await_ready(replica))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("model %s: starting Ray replica %d (%s)", self.model.key, replica.serial, resources)
        return replica

    async def _await_ready(self, replica: Replica) -> None:
        try:
            info = await replica.actor.ready.remote()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.start_failures += 1
            self.last_start_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning("model %s: Ray replica %d failed to start: %s", self.model.key, replica.serial, exc)
            self.forget(replica)
        else:
            if replica.state == "starting":
                replica.state, replica.info = "ready", info
                replica.idle_since = time.monotonic()
                self.start_failures = 0
                log.info(
                    "model %s: Ray replica %d ready on %s (%s, pid %d)",
                    self.model.key, replica.serial, replica.node, info["device"], info["pid"],
                )  # fmt: skip
        self._on_change()

    def forget(self, replica: Replica) -> None:
        """Drop a replica that died (its actor is gone, or going: make sure)."""
        if replica in self.replicas:
            self.replicas.remove(replica)
        if replica.state != "dead":
            replica.state = "dead"
            _kill(replica.actor)

    def retire(self, replica: Replica) -> None:
        log.info("model %s: retiring idle Ray replica %d on %s", self.model.key, replica.serial, replica.node)
        replica.state = "retired"
        self.replicas.remove(replica)
        _kill(replica.actor)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for replica in list(self.replicas):
            self.replicas.remove(replica)
            replica.state = "retired"
            _kill(replica.actor)


def _kill(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception as exc:  # already gone with its node: nothing to release
        log.debug("ray.kill: %s", exc)
