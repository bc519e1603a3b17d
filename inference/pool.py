"""``InferencePool``: ONNX models as awaitables, run in worker processes with dynamic batching.

Usage, from an asyncio event loop (never blocked by inference)::

    pool = InferencePool(workers=2, max_batch_rows=4096, max_wait_ms=2, queue_limit=256)
    await pool.start()
    out = await pool.infer(ModelRef("digits@1", "digits.onnx"), {"X": pixels})  # rows first
    await pool.close()

Concurrent ``infer`` calls for one model are coalesced into batches (``inference.batcher``), run by
one of the workers (``inference.worker``), and each caller gets its own rows back. Tensors travel
through shared memory (``inference.ipc``). A worker that dies fails only the batches it held, with
``WorkerCrashedError``, and is restarted; a batch ONNX Runtime rejects fails with ``InferenceError``.

Workers are started with multiprocessing's "spawn" method (fork is unsafe under uvloop and threads),
which re-imports the program's ``__main__`` module in every worker: scripts that start a pool need
the usual ``if __name__ == "__main__":`` guard, and should keep heavy imports out of module level.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from typing import Any

from inference.batcher import Batch, ModelQueue, split_outputs
from inference.devices import default_intra_op_threads, default_worker_count, gpu_count, probe_model_bytes
from inference.errors import (
    InferenceError,
    ModelLoadError,
    ModelNotFoundError,
    PoolClosedError,
    WorkerCrashedError,
)
from inference.front import RequestFront
from inference.handle import WorkerHandle, WorkerInfo
from inference.model import ModelRef
from inference.stats import StatsRecorder

log = logging.getLogger("sievedb.inference.pool")

_ERRORS: dict[str, type[Exception]] = {
    "InferenceError": InferenceError,
    "ModelLoadError": ModelLoadError,
    "ModelNotFoundError": ModelNotFoundError,
}


class InferencePool(RequestFront):
    """A pool of ONNX Runtime worker processes with dynamic batching across concurrent callers.

    workers: worker processes (default ``default_worker_count()``).
    max_batch_rows: most rows in one batch; a larger request is cut into chunks of this size.
    max_wait_ms: how long a request may wait for others while a batch of its model is running.
    queue_limit: most requests waiting to be dispatched; ``infer`` awaits while it is reached.
    pipeline_depth: batches a worker may hold at once (the next one waits in its pipe).
    device: "auto" (CUDA when it really works, else CPU), "cuda" (try CUDA, warn when absent), "cpu".
    intra_op_threads: ORT threads per CPU worker (default: the cores divided among the workers).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        max_batch_rows: int = 4096,
        max_wait_ms: float = 2.0,
        queue_limit: int = 256,
        pipeline_depth: int = 2,
        device: str = "auto",
        intra_op_threads: int | None = None,
        stats_window: int = 1024,
        start_timeout_s: float = 120.0,
        mp_context: str = "spawn",
    ) -> None:
        super().__init__(
            max_batch_rows=max_batch_rows,
            max_wait_ms=max_wait_ms,
            queue_limit=queue_limit,
            pipeline_depth=pipeline_depth,
            device=device,
            stats_window=stats_window,
        )
        self.worker_count = workers if workers is not None else default_worker_count()
        if self.worker_count < 1:
            raise ValueError("workers must be at least 1")
        self.intra_op_threads = intra_op_threads
        self.start_timeout_s = start_timeout_s
        self._ctx = multiprocessing.get_context(mp_context)
        self._handles: list[WorkerHandle] = []
        self._queues: dict[str, ModelQueue] = {}
        self._out_bytes_per_row: dict[str, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._restarts: set[asyncio.Task] = set()
        self._rotation = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the workers and wait until every one has chosen its device."""
        if self._state != "new":
            raise RuntimeError("InferencePool.start() may be called once")
        self._open()
        config = self._worker_config()
        gpus = max(1, gpu_count()) if config["probe"] is not None else 1
        for i in range(self.worker_count):
            cfg = dict(config, gpu_index=i % gpus)
            self._handles.append(
                WorkerHandle(i, self._ctx, cfg, self.pipeline_depth, self._on_result, self._on_worker_exit)
            )
        self._state = "running"
        try:
            await asyncio.gather(*(self._start_worker(h) for h in self._handles))
        except BaseException:
            await self.close(drain=False)
            raise

    def _worker_config(self) -> dict[str, Any]:
        want_probe = self.device == "cuda" or (self.device == "auto" and gpu_count() > 0)
        return {
            "device": self.device,
            "gpu_index": 0,
            "probe": probe_model_bytes() if want_probe else None,
            "threads_cpu": self.intra_op_threads or default_intra_op_threads(self.worker_count, "cpu"),
            "threads_cuda": self.intra_op_threads or default_intra_op_threads(self.worker_count, "cuda"),
        }

    async def _start_worker(self, handle: WorkerHandle) -> None:
        ready = await handle.start(self.start_timeout_s)
        provider = ready["providers"][0]
        log.info(
            "inference worker %d (pid %d) runs on %s [%s]: %s; %d intra-op threads",
            handle.worker_id, ready["pid"], ready["device"], provider, ready["reason"], ready["threads"],
        )  # fmt: skip
        if self.device == "cuda" and not ready["device"].startswith("cuda"):
            log.warning(
                "inference worker %d: CUDA was requested but is unavailable; using CPU", handle.worker_id
            )
        self._schedule_soon()

    async def close(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Stop accepting requests; with ``drain``, let queued and running ones finish first."""
        if not await self._closing(drain, timeout):
            return
        for queue in self._queues.values():
            while queue.pending:
                self._fail(queue.take(1 << 62), PoolClosedError("inference pool is closed"))
        for task in self._restarts:
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        await asyncio.gather(*(h.stop(timeout=10.0) for h in self._handles), return_exceptions=True)
        for handle in self._handles:
            for batch in handle.in_flight.values():
                self._fail(batch, PoolClosedError("inference pool is closed"))
            handle.in_flight.clear()
        self._state = "closed"

    def _queue_of(self, model: ModelRef) -> ModelQueue:
        queue = self._queues.get(model.ident)
        if queue is None:
            queue = self._queues[model.ident] = ModelQueue(model)
        return queue

    def workers(self) -> list[WorkerInfo]:
        """Pid, state and device of every worker."""
        return [h.info() for h in self._handles]

    def replicas(self, model_key: str) -> dict[str, dict[str, Any]]:
        """Where the model ran, as ``RayInferencePool.replicas`` says it: one node, "local",
        whose replicas are the workers (any of them runs any model)."""
        stats = self.stats(model_key)
        ms = round(1000.0 * stats.inference_seconds / stats.rows, 6) if stats.rows else None
        ready = sum(1 for w in self.workers() if w.state == "ready")
        return {"local": {"replicas": ready, "rows": stats.rows, "batches": stats.batches, "ms_per_row": ms}}

    # -- scheduling -----------------------------------------------------------------------------

    def _schedule(self) -> None:
        self._schedule_pending = False
        if self._state not in ("running", "closing"):
            return
        now = time.monotonic()
        wake = float("inf")
        for queue in self._fair_order():
            for request in queue.drop_cancelled():
                self._release(request)
            while queue.pending:
                if not queue.ready(now, self.max_batch_rows, self.max_wait_s):
                    wake = min(wake, queue.deadline(self.max_wait_s))
                    break
                handle = self._pick_worker(queue.model.ident)
                if handle is None:
                    return  # no room anywhere; a finishing batch reschedules
                self._dispatch(handle, queue, queue.take(self.max_batch_rows))
        self._arm_timer(wake, now)
        self._check_idle()

    def _fair_order(self) -> list[ModelQueue]:
        # Rotate so that one busy model cannot starve the others of free workers.
        queues = [q for q in self._queues.values() if q.pending]
        if len(queues) > 1:
            self._rotation += 1
            k = self._rotation % len(queues)
            queues = queues[k:] + queues[:k]
        return queues

    def _arm_timer(self, wake: float, now: float) -> None:
        if wake == float("inf") or wake >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer_at = wake
        self._timer = self._loop.call_later(max(0.0, wake - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        self._schedule()

    def _pick_worker(self, ident: str) -> WorkerHandle | None:
        best, best_key = None, None
        for handle in self._handles:
            if handle.can_take():
                # Least loaded first; among equals, one that already has the session loaded.
                key = (len(handle.in_flight), ident not in handle.loaded)
                if best_key is None or key < best_key:
                    best, best_key = handle, key
        return best

    def _dispatch(self, handle: WorkerHandle, queue: ModelQueue, batch: Batch) -> None:
        for request in batch.requests:
            self._release(request)
        hint = int(self._out_bytes_per_row.get(batch.model.ident, 0) * batch.rows * 1.25) + 4096
        try:
            handle.submit(batch, hint)
        except InferenceError as exc:
            self._fail(batch, exc)
            return
        queue.running += 1
        batch.dispatched_at = time.perf_counter()

    # -- completions ----------------------------------------------------------------------------

    def _on_result(
        self, handle: WorkerHandle, batch: Batch, msg: dict[str, Any], outputs: dict[str, Any] | None
    ) -> None:
        self._queues[batch.model.ident].running -= 1
        recorder = self._recorder(batch.model.key)
        if outputs is None:
            recorder.errors += 1
            error = _ERRORS.get(msg["error"], InferenceError)
            self._fail(batch, error(msg["message"]))
        else:
            handle.crash_streak = 0
            handle.loaded.add(batch.model.ident)
            wall = time.perf_counter() - batch.dispatched_at
            recorder.record_batch(
                batch.rows, len(batch.requests), msg["device"], msg["run_s"], msg["pre_s"], wall
            )
            self._learn_output_size(batch, msg)
            self._deliver(batch, outputs, recorder)
        self._schedule_soon()

    def _deliver(self, batch: Batch, outputs: dict[str, Any], recorder: StatsRecorder) -> None:
        try:
            parts = split_outputs(batch, outputs)
        except InferenceError as exc:
            recorder.errors += 1
            self._fail(batch, exc)
            return
        for request, part in zip(batch.requests, parts, strict=True):
            if not request.future.done():
                request.future.set_result(part)

    def _learn_output_size(self, batch: Batch, msg: dict[str, Any]) -> None:
        nbytes = sum(h["nbytes"] + h.get("data_nbytes", 0) + 128 for h in msg["outputs"])
        per_row = nbytes / max(1, batch.rows)
        ident = batch.model.ident
        self._out_bytes_per_row[ident] = max(per_row, self._out_bytes_per_row.get(ident, 0.0))

    def _on_worker_exit(self, handle: WorkerHandle, batches: list[Batch], description: str) -> None:
        handle.crash_streak += 1
        for batch in batches:
            self._queues[batch.model.ident].running -= 1
            self._recorder(batch.model.key).crashes += 1
            message = (
                f"inference worker {handle.worker_id} (pid {handle.pid}) {description} while running "
                f"model {batch.model.key!r}; the worker is being restarted"
            )
            self._fail(batch, WorkerCrashedError(message))
        log.warning(
            "inference worker %d (pid %s) %s; restarting it", handle.worker_id, handle.pid, description
        )
        if self._state == "running":
            task = asyncio.ensure_future(self._restart(handle))
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)
        self._schedule_soon()

    async def _restart(self, handle: WorkerHandle) -> None:
        attempt = 0
        while self._state == "running":
            # Back off when a worker keeps dying, so a poisoned model cannot spin the CPU.
            streak = handle.crash_streak + attempt
            await asyncio.sleep(0.0 if streak <= 1 else min(10.0, 0.25 * 2 ** (streak - 2)))
            try:
                await self._start_worker(handle)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                log.error("inference worker %d failed to restart: %s", handle.worker_id, exc)

    def _check_idle(self) -> None:
        if self._idle is None:
            return
        if not any(q.pending or q.running for q in self._queues.values()):
            self._idle.set()
