"""``RayInferencePool``: the inference pool's interface, with model replicas as Ray actors.

The planner uses it exactly as it uses ``inference.pool.InferencePool`` (``start``, ``infer``,
``stats``, ``workers``, ``queued_requests``, ``replicas``, ``close``); ``sievedb serve
--ray-address ADDR`` (or ``$RAY_ADDRESS``) picks it. Start it against a cluster like this::

    ray start --head --port 6379 --num-cpus 0          # the head schedules no replica itself
    ray start --address HEAD:6379 --num-cpus 4         # on each worker node (GPUs are found)
    sievedb serve --ray-address HEAD:6379 [--ray-max-replicas N]

or from Python (a benchmark, a test; inside a running asyncio loop)::

    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    pool = RayInferencePool(cluster.address, max_replicas=2)
    await pool.start()
    out = await pool.infer(ModelRef("digits@1", "digits.onnx"), {"X": pixels})
    await pool.close()

SieveDB's process becomes a Ray driver (``ray.init`` runs in a thread, never on the event loop),
so it runs on a node of the cluster (``docker/ray-frontend.sh`` joins one offering no CPUs);
the model files must be readable at the same path on every node (a shared volume, or the same
image), and every node needs ``sievedb`` importable by Ray's Python. Each front-end (driver) has
replicas of its own: ``max_replicas`` bounds one front-end's replicas of one model. Tests and
benchmarks on one machine: ``tests/ray/cluster.py`` (a head and worker nodes, loopback only
inside ``unshare -n``); ``tests/ray/scenario_overhead.py`` measures a batch's cost on Ray.

What happens to a request: it waits in its model's queue (``inference.batcher``), so requests of
concurrent queries gather into one batch, exactly as in the local pool. A batch is packed into
one array (``inference.ipc``'s layout), sent inside the actor call when small or put in Ray's
object store once when large, and sent to the least loaded replica (``inference.ray_fleet``)
with room (two batches each, so an actor never waits for the next one); the replica reads its
inputs in place from the object store.

When a replica or its node dies, each batch it held goes back to the head of its model's line
and runs on another replica (the same inputs: outputs are deterministic, so nothing
is lost or repeated); after ``max_attempts`` tries it fails with ``WorkerCrashedError`` naming
the model. The dead replica is replaced, and ``grow_after_s`` / ``idle_release_s`` size the
replicas to the load between 1 and ``max_replicas``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
import ray
import ray.exceptions as rex

from inference import ipc
from inference.batcher import Batch, ModelQueue, split_outputs
from inference.errors import (
    InferenceError,
    InferenceLayerError,
    ModelLoadError,
    ModelNotFoundError,
    PoolClosedError,
    WorkerCrashedError,
)
from inference.front import RequestFront
from inference.handle import WorkerInfo
from inference.model import ModelRef
from inference.ray_cluster import ClusterInfo, connect, disconnect
from inference.ray_fleet import Job, ModelFleet, Replica

log = logging.getLogger("sievedb.inference.ray")

# A replica, its worker process or its node went away: the batch can run again elsewhere.
REPLICA_LOST: tuple[type[Exception], ...] = (
    rex.RayActorError,  # ActorDiedError, ActorUnavailableError
    rex.WorkerCrashedError,
    rex.NodeDiedError,
    rex.LocalRayletDiedError,
    rex.ObjectLostError,  # OwnerDiedError, ObjectReconstructionFailedError, ...
    rex.ActorUnschedulableError,
)

# Ray passes arguments up to 100 KiB inside the call itself (max_direct_call_object_size).
INLINE_BYTES = 100 * 1024

_ERRORS: dict[str, type[Exception]] = {
    "InferenceError": InferenceError,
    "ModelLoadError": ModelLoadError,
    "ModelNotFoundError": ModelNotFoundError,
}


class RayInferencePool(RequestFront):
    """ONNX models run by Ray actors, with the local pool's batching and interface.

    address: the Ray cluster (``host:port`` of the head, ``auto``, or ``ray://`` for Ray Client).
    max_replicas: most replicas per model (default: one per GPU of the cluster, else one per two
        CPUs; at least 1).
    max_batch_rows, max_wait_ms, queue_limit: as ``InferencePool``'s.
    pipeline_depth: batches one replica may hold at once.
    device: "auto" (one GPU per replica when the cluster has GPUs), "cuda" or "cpu".
    max_attempts: tries of one batch on replicas that died under it before the request fails.
    grow_after_s: how long the oldest queued request waits, every replica full, before a replica
        is added. idle_release_s: how long a replica idles before it is retired (one stays).
    replica_wait_s: how long work may wait with no replica ready before it fails.
    place_wait_s: how long a new replica may wait for Ray to place it before the last replica of
        a model with no work (idle as long) is retired to make room.
    """

    def __init__(
        self,
        address: str,
        *,
        max_replicas: int | None = None,
        max_batch_rows: int = 4096,
        max_wait_ms: float = 2.0,
        queue_limit: int = 256,
        pipeline_depth: int = 2,
        device: str = "auto",
        max_attempts: int = 3,
        grow_after_s: float = 0.2,
        idle_release_s: float = 60.0,
        replica_wait_s: float = 120.0,
        place_wait_s: float = 2.0,
        stats_window: int = 1024,
        tick_s: float = 0.05,
    ) -> None:
        super().__init__(
            max_batch_rows=max_batch_rows,
            max_wait_ms=max_wait_ms,
            queue_limit=queue_limit,
            pipeline_depth=pipeline_depth,
            device=device,
            stats_window=stats_window,
        )
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if max_replicas is not None and max_replicas < 1:
            raise ValueError("max_replicas must be at least 1")
        self.address = address
        self.max_replicas = max_replicas
        self.max_attempts = max_attempts
        self.grow_after_s = grow_after_s
        self.idle_release_s = idle_release_s
        self.replica_wait_s = replica_wait_s
        self.place_wait_s = place_wait_s
        self.tick_s = tick_s
        self.cluster: ClusterInfo | None = None
        self._joined = False
        self._fleets: dict[str, ModelFleet] = {}
        self._nodes: dict[str, dict[str, list[float]]] = {}  # model key -> node -> [rows, run_s, batches]
        self._jobs: set[asyncio.Task] = set()
        self._ticker: asyncio.Task | None = None
        self._made_room_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the cluster (in a thread: ``ray.init`` blocks) and start the housekeeping."""
        if self._state != "new":
            raise RuntimeError("RayInferencePool.start() may be called once")
        self._open()
        self.cluster, self._joined = await asyncio.to_thread(connect, self.address)
        self._state = "running"
        self._ticker = asyncio.ensure_future(self._tick())

    async def close(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop accepting requests; with ``drain``, let queued and running ones finish first.
        Retires every replica, and leaves the cluster when ``start`` joined it."""
        if not await self._closing(drain, timeout):
            return
        self._state = "closed"
        closed = PoolClosedError("inference pool is closed")
        if self._ticker is not None:
            self._ticker.cancel()
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._jobs):
            task.cancel()
        for fleet in self._fleets.values():
            while fleet.queue.pending:
                self._fail(fleet.queue.take(1 << 62), closed)
            while fleet.retry:
                self._fail(fleet.retry.popleft().batch, closed)
            fleet.close()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        if self._joined:
            await asyncio.to_thread(disconnect)

    def workers(self) -> list[WorkerInfo]:
        """Every replica of every model, as the local pool describes its workers."""
        return [
            WorkerInfo(r.serial, r.info.get("pid"), r.state, r.device, r.in_flight, 0)
            for fleet in self._fleets.values()
            for r in fleet.replicas
        ]

    def replicas(self, model_key: str) -> dict[str, dict[str, Any]]:
        """Per node: this model's live replicas, and the rows, batches and ms/row it ran there."""
        nodes: dict[str, dict[str, Any]] = {}
        for node, (rows, run_s, batches) in self._nodes.get(model_key, {}).items():
            ms = round(1000.0 * run_s / rows, 6) if rows else None
            nodes[node] = {"replicas": 0, "rows": int(rows), "batches": int(batches), "ms_per_row": ms}
        for fleet in self._fleets.values():
            if fleet.model.key != model_key:
                continue
            for r in fleet.replicas:
                if r.state == "ready":
                    entry = nodes.setdefault(
                        r.node, {"replicas": 0, "rows": 0, "batches": 0, "ms_per_row": None}
                    )
                    entry["replicas"] += 1
                    entry["device"] = r.device
        return nodes

    # -- scheduling -----------------------------------------------------------------------------

    def _queue_of(self, model: ModelRef) -> ModelQueue:
        return self._fleet(model).queue

    def _fleet(self, model: ModelRef) -> ModelFleet:
        fleet = self._fleets.get(model.ident)
        if fleet is None:
            gpu = self._wants_gpu(model)
            assert self.cluster is not None
            most = self.max_replicas or self.cluster.default_max_replicas(gpu)
            fleet = self._fleets[model.ident] = ModelFleet(
                model, gpu=gpu, device=self.device, depth=self.pipeline_depth, max_replicas=most,
                on_change=self._schedule_soon,
            )  # fmt: skip
        return fleet

    def _wants_gpu(self, model: ModelRef) -> bool:
        assert self.cluster is not None
        pinned_cpu = (model.session_options or {}).get("device") == "cpu"
        return self.device != "cpu" and not pinned_cpu and self.cluster.gpus >= 1

    def _schedule(self) -> None:
        self._schedule_pending = False
        if self._state not in ("running", "closing"):
            return
        now = time.monotonic()
        for fleet in self._fleets.values():
            self._dispatch_fleet(fleet, now)
        self._check_idle()
        self._wake_at_deadline(now)

    def _wake_at_deadline(self, now: float) -> None:
        """A request left waiting for others to join its batch leaves at its deadline (not at
        the next housekeeping tick); one timer, for the earliest."""
        deadlines = [f.queue.deadline(self.max_wait_s) for f in self._fleets.values() if f.queue.pending]
        wake = min((d for d in deadlines if d > now), default=None)
        if wake is None or wake >= self._timer_at or self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = wake
        self._timer = self._loop.call_later(wake - now, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        self._schedule()

    def _dispatch_fleet(self, fleet: ModelFleet, now: float) -> None:
        for request in fleet.queue.drop_cancelled():
            self._release(request)
        while fleet.retry and (replica := fleet.pick()) is not None:
            self._dispatch(fleet, replica, fleet.retry.popleft())
        while fleet.queue.ready(now, self.max_batch_rows, self.max_wait_s):
            replica = fleet.pick()
            if replica is None:
                if fleet.live_count() == 0:
                    fleet.start_one()
                return
            batch = fleet.queue.take(self.max_batch_rows)
            for request in batch.requests:
                self._release(request)
            self._dispatch(fleet, replica, Job(batch))

    def _dispatch(self, fleet: ModelFleet, replica: Replica, job: Job) -> None:
        replica.in_flight += 1
        fleet.queue.running += 1
        task = asyncio.ensure_future(self._run(fleet, replica, job))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _run(self, fleet: ModelFleet, replica: Replica, job: Job) -> None:
        batch = job.batch
        job.attempts += 1
        try:
            if job.payload is None:
                job.payload, job.headers = await _pack(batch)
            started = time.perf_counter()
            meta, headers, payload = await replica.actor.run.remote(job.payload, job.headers)
            wall = time.perf_counter() - started
        except REPLICA_LOST as exc:
            self._lost(fleet, replica, job, exc)
            return
        except asyncio.CancelledError:  # the pool is closing under the batch
            self._fail(batch, PoolClosedError("inference pool is closed"))
            raise
        except Exception as exc:  # a Ray task error or a failed put: the batch fails, not the replica
            self._recorder(batch.model.key).errors += 1
            self._fail(batch, InferenceError(f"model {batch.model.key!r}: {type(exc).__name__}: {exc}"))
        else:
            self._complete(replica, job, meta, headers, payload, wall)
        finally:
            replica.in_flight -= 1
            fleet.queue.running -= 1
            if not replica.in_flight:
                replica.idle_since = time.monotonic()
            self._schedule_soon()

    def _complete(
        self, replica: Replica, job: Job, meta: dict, headers: list, payload: Any, wall: float
    ) -> None:
        batch = job.batch
        recorder = self._recorder(batch.model.key)
        if "error" in meta:
            recorder.errors += 1
            self._fail(batch, _ERRORS.get(meta["error"], InferenceError)(meta["message"]))
            return
        # Copied out of the object store: callers may keep or change the arrays.
        outputs = ipc.read_tensors(memoryview(payload), headers, copy=True)
        recorder.record_batch(
            batch.rows, len(batch.requests), replica.device, meta["run_s"], meta["pre_s"], wall
        )
        node = self._nodes.setdefault(batch.model.key, {}).setdefault(replica.node, [0, 0.0, 0])
        node[0] += batch.rows
        node[1] += meta["run_s"]
        node[2] += 1
        try:
            parts = split_outputs(batch, outputs)
        except InferenceError as exc:
            recorder.errors += 1
            self._fail(batch, exc)
            return
        for request, part in zip(batch.requests, parts, strict=True):
            if not request.future.done():
                request.future.set_result(part)

    def _lost(self, fleet: ModelFleet, replica: Replica, job: Job, exc: Exception) -> None:
        """The replica (or its node) died under the batch: replace it, and run the batch again."""
        key = job.batch.model.key
        self._recorder(key).crashes += 1
        if replica.state != "dead":
            log.warning(
                "model %s: Ray replica %d on %s lost: %s", key, replica.serial, replica.node, _first_line(exc)
            )
            fleet.forget(replica)
        if isinstance(exc, rex.ObjectLostError):
            job.payload = job.headers = None  # the inputs went with their node: put them again
        if job.attempts >= self.max_attempts or self._state == "closed":
            message = (
                f"model {key!r}: the Ray replica running this batch died, {job.attempts} time(s) of "
                f"{self.max_attempts} allowed (last: {_first_line(exc)})"
            )
            self._fail(job.batch, WorkerCrashedError(message))
            return
        job.waiting_since = time.monotonic()
        fleet.retry.append(job)
        if fleet.live_count() == 0:
            fleet.start_one()

    def _check_idle(self) -> None:
        if self._idle is not None and not any(f.busy() for f in self._fleets.values()):
            self._idle.set()

    # -- housekeeping ---------------------------------------------------------------------------

    async def _tick(self) -> None:
        """Size every model's replicas to its load, and give up on work no replica can take."""
        while self._state in ("running", "closing"):
            await asyncio.sleep(self.tick_s)
            try:
                self._housekeep(time.monotonic())
            except Exception:  # a bug here must not stop the housekeeping for good
                log.exception("Ray inference pool: housekeeping failed")

    def _housekeep(self, now: float) -> None:
        for fleet in self._fleets.values():
            fleet.resize(now, self.grow_after_s, self.idle_release_s)
            self._give_up_waiting(fleet, now)
        self._make_room(now)
        self._schedule()

    def _make_room(self, now: float) -> None:
        """When a model's first replica cannot be placed, retire an idle model's last one."""
        fleets = list(self._fleets.values())
        # One at a time, a second apart: Ray needs a moment to place the waiting replica.
        if now - self._made_room_at < 1.0 or not any(
            f.waiting_for_room(now, self.grow_after_s) for f in fleets
        ):
            return
        for fleet in sorted(fleets, key=lambda f: f.last_used):
            if fleet.release_last(now, self.place_wait_s):
                self._made_room_at = now
                return

    def _give_up_waiting(self, fleet: ModelFleet, now: float) -> None:
        if fleet.ready_count() or not (fleet.queue.pending or fleet.retry):
            return
        if fleet.start_failures >= self.max_attempts:
            why = f"no Ray replica could start ({fleet.last_start_error})"
        elif fleet.oldest_wait(now) >= self.replica_wait_s:
            why = f"no Ray replica became ready within {self.replica_wait_s:g} s (the cluster lacks room?)"
        else:
            return
        error = InferenceLayerError(f"model {fleet.model.key!r}: {why}")
        while fleet.queue.pending:
            self._fail(fleet.queue.take(1 << 62), error)
        while fleet.retry:
            self._fail(fleet.retry.popleft().batch, error)
        fleet.start_failures = 0


async def _pack(batch: Batch) -> tuple[Any, list[dict[str, Any]]]:
    """The batch's inputs concatenated in one array: a small one as it is (Ray sends it inside
    the call), a larger one put in the object store once, in a thread (the copy takes a while),
    so that retries reuse it. Measured on loopback: a put 64-row batch cost 7.7 ms a call, the
    same batch inline 1.7 ms."""
    plan, total = ipc.plan_layout(batch.tensors())
    if total <= INLINE_BYTES:
        return _write(plan, total)
    return await asyncio.to_thread(_write_and_put, plan, total)


def _write(plan: list, total: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    packed = np.empty(total, dtype=np.uint8)
    return packed, ipc.write_layout(memoryview(packed), plan)


def _write_and_put(plan: list, total: int) -> tuple[Any, list[dict[str, Any]]]:
    packed, headers = _write(plan, total)
    return ray.put(packed), headers


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
